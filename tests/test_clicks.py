"""Clicks without spying (issue 14): the digest's story links go through the signed
``/r/{token}`` redirect, which counts a click per story in aggregate, sets no cookie, logs
nothing about the reader and never redirects anywhere the token was not signed for.

Over the real app (uvicorn on loopback), SQLite and PostgreSQL; the sources the links land on
are a loopback HTTP server."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from itsdangerous import URLSafeSerializer

from newsexchange.approval.decide import decide
from newsexchange.config import Config
from newsexchange.db import Database, Digest, Item, Source, Translation
from newsexchange.db.queries.clicks import clicks_of, count_click, total_clicks
from newsexchange.digest import build_digest
from newsexchange.digest.links import ClickLinkError, ClickTarget, click_url, read_click
from newsexchange.digest.render import RenderedDigest, render_digest
from newsexchange.web.app import create_app
from tests.servers import HTTPServer, Response, SMTPServer
from tests.test_web_ops import served
from tests.webserver import WebServer

EXCHANGE = """\
sources:
  - {id: yle, name: Yle Pohjois-Karjala, region: joensuu, url: "https://yle.example/rss", language: fi}
exchanges:
  - id: fi-to-ru
    name: Новости Йоэнсуу
    from: [joensuu]
    to: petrozavodsk
    language: ru
    editors: [editor@example.fi]
"""
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PERIOD = date(2026, 11, 1)
HREF = re.compile(r'href="([^"]*)"')


@pytest.fixture
def source_site() -> Iterator[HTTPServer]:
    """The news site the stories link to (every path answers with its own name)."""
    server = HTTPServer().start()
    server.routes["*"] = lambda req: Response(200, f"story at {req.path}".encode())
    yield server
    server.stop()


def _config(
    write_config: Callable[..., Config], db_url: str | None = None, *, clicks: bool = True
) -> Config:
    text = EXCHANGE if clicks else EXCHANGE + "    impact: {clicks: false}\n"
    env = {"NEWSEXCHANGE_DATABASE_URL": db_url} if db_url else None
    return write_config(text, env=env)


def _digest(db: Database, cfg: Config, links: list[str], *, approve: bool = True) -> int:
    """A built digest of one story per link (the links of its items), approved by the
    editor unless ``approve`` is False (only an approved digest's clicks count)."""
    with db.session() as s:
        s.add(Source(id="yle", config_url="https://yle.example/rss", url="https://yle.example/rss"))
        s.flush()
        for n, link in enumerate(links):
            item = Item(
                source_id="yle",
                identity=f"story-{n}",
                link=link,
                title=f"Uutinen {n}",
                summary_text=f"Uutinen {n} (fi)",
                region="joensuu",
                language="fi",
                published_at=datetime(2026, 11, 3 + n, 9, tzinfo=UTC),
                content_hash=f"h{n}",
            )
            item.translations.append(
                Translation(
                    language="ru",
                    title=f"Новость {n}",
                    summary_text=f"Новость {n} (ru)",
                    status="done",
                    provider="test",
                )
            )
            s.add(item)
    digest_id = int(build_digest(db, cfg, "fi-to-ru", period_start=PERIOD, now=NOW).id)
    if approve:
        with db.session() as s:
            digest = s.get(Digest, digest_id)
            assert digest is not None
            decide(
                s,
                cfg,
                digest,
                editor="editor@example.fi",
                decision="approve",
                channel="cli",
                address=None,
                now=NOW,
            )
    return digest_id


def _rendered(db: Database, cfg: Config, digest_id: int) -> RenderedDigest:
    with db.session() as s:
        digest = s.get(Digest, digest_id)
        assert digest is not None
        return render_digest(s, cfg, digest)  # as delivery renders it (personalize.py)


def _story_links(rendered: RenderedDigest) -> list[str]:
    """The story links of the HTML part, in order (the "view in browser" and unsubscribe
    links are not story links)."""
    return [h for h in HREF.findall(rendered.html) if "/digests/" not in h and "%%" not in h]


def _link_to(cfg: Config, rendered: RenderedDigest, target: str) -> tuple[str, int]:
    """The story link of ``rendered`` that leads to ``target``, and its story's position."""
    for link in _story_links(rendered):
        click = read_click(cfg, link.rsplit("/", 1)[1])
        if click.target == target:
            return link, click.position
    raise AssertionError(f"no story link to {target}")


def _path(url: str) -> str:
    return urlsplit(url).path


def _counts(db: Database, digest_id: int) -> tuple[dict[int, int], int]:
    with db.session() as s:
        return clicks_of(s, digest_id), total_clicks(s, digest_id)


# -- the signed link (pure) ------------------------------------------------------------------


def test_a_click_link_carries_its_story_and_target_under_the_signature(
    write_config: Callable[..., Config],
) -> None:
    cfg = _config(write_config)
    url = click_url(cfg, 7, 3, 42, "https://yle.example/uutiset/1?a=b&c=d")
    assert url.startswith(f"{cfg.public_url}/r/")
    token = url.rsplit("/", 1)[1]
    assert read_click(cfg, token) == ClickTarget(7, 3, 42, "https://yle.example/uutiset/1?a=b&c=d")
    # the same story gives the same link every time: nothing per copy, nothing per reader
    assert click_url(cfg, 7, 3, 42, "https://yle.example/uutiset/1?a=b&c=d") == url


def test_every_changed_byte_of_a_token_is_refused_or_says_exactly_the_same(
    write_config: Callable[..., Config],
) -> None:
    cfg = _config(write_config)
    target = ClickTarget(7, 3, 42, "https://yle.example/uutiset/1")
    token = click_url(cfg, *vars(target).values()).rsplit("/", 1)[1]
    refused = 0
    alphabet = "ABCabc019-_."
    for i in range(len(token)):
        for ch in alphabet:
            if ch == token[i]:
                continue
            changed = token[:i] + ch + token[i + 1 :]
            try:
                got = read_click(cfg, changed)
            except ClickLinkError as exc:
                assert exc.kind == "tampered"
                refused += 1
            else:
                # only a base64 character's unused low bits can change without changing the
                # bytes: then the link says exactly what was signed, never anything else
                assert got == target, f"byte {i} → {ch!r} read as {got}"
    assert refused > len(token) * (len(alphabet) - 2) * 0.9
    for cut in (token[:-1], token[: len(token) // 2], token + "A", "", "."):
        with pytest.raises(ClickLinkError):
            read_click(cfg, cut)


def test_a_token_signed_with_another_key_or_purpose_is_refused(
    write_config: Callable[..., Config],
) -> None:
    from newsexchange.approval.tokens import make_action_token

    cfg = _config(write_config)
    other = write_config(EXCHANGE, env={"NEWSEXCHANGE_SECRET_KEY": "not-our-key"}, name="o.yaml")
    forged = click_url(other, 1, 1, 1, "https://evil.example/phish").rsplit("/", 1)[1]
    with pytest.raises(ClickLinkError) as err:
        read_click(cfg, forged)
    assert err.value.kind == "tampered"
    # the same key with the approval links' salt: an approval token is no click token
    action = make_action_token(
        cfg, digest_id=1, version=1, editor="e@example.fi", action="approve", now=NOW, valid_days=1
    )
    with pytest.raises(ClickLinkError):
        read_click(cfg, action)


@pytest.mark.parametrize(
    "target",
    [
        "javascript:alert(document.cookie)",
        "JavaScript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "//evil.example/x",
        "/relative",
        "ftp://yle.example/file",
        "https://",
        "https://yle.example/a\r\nSet-Cookie: x=1",
    ],
)
def test_a_target_that_is_not_a_web_page_cannot_be_signed_nor_followed(
    write_config: Callable[..., Config], target: str
) -> None:
    cfg = _config(write_config)
    with pytest.raises(ClickLinkError) as err:
        click_url(cfg, 1, 1, 1, target)
    assert err.value.kind == "target"
    # even signed with our own key and salt (a bug elsewhere), it is not followed
    raw = URLSafeSerializer(
        cfg.secret_key.get_secret_value(), salt="newsexchange.digest.click.v1"
    ).dumps([1, 1, 1, target])
    with pytest.raises(ClickLinkError) as err2:
        read_click(cfg, raw)
    assert err2.value.kind == "target"


# -- the rendered mail -----------------------------------------------------------------------


def test_the_mailed_story_links_go_through_the_redirect_and_are_the_same_for_everyone(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    cfg = _config(write_config)
    db = db_for(cfg)
    digest_id = _digest(db, cfg, ["https://yle.example/a", "https://yle.example/b"])
    rendered = _rendered(db, cfg, digest_id)
    links = _story_links(rendered)
    assert len(links) == 4  # title and "read the original", per story
    assert all(link.startswith(f"{cfg.public_url}/r/") for link in links)
    targets = [read_click(cfg, link.rsplit("/", 1)[1]) for link in links]
    # the title and "read the original" of one story: the same link, its story's position
    assert links[0] == links[1] and links[2] == links[3] and links[0] != links[2]
    assert sorted((t.position, t.target) for t in targets) == [
        (1, "https://yle.example/b"),  # newest first
        (1, "https://yle.example/b"),
        (2, "https://yle.example/a"),
        (2, "https://yle.example/a"),
    ]
    assert {t.digest_id for t in targets} == {digest_id}
    # the text part carries the same links, and no source link goes around them
    for link in set(links):
        assert link in rendered.text
    assert "https://yle.example/" not in rendered.html + rendered.text
    # nothing in a link can tell one recipient from another: the only per-copy part
    # (delivery/personalize.py) is the unsubscribe marker, outside every story link
    assert all("%%" not in link for link in links)


def test_with_clicks_off_the_mail_links_straight_to_the_source_and_looks_the_same(
    write_config: Callable[..., Config], tmp_path: Path
) -> None:
    counted = _config(write_config)
    direct = write_config(EXCHANGE + "    impact: {clicks: false}\n", name="direct.yaml")
    assert direct.exchange("fi-to-ru").impact.clicks is False
    db = Database(f"sqlite:///{tmp_path}/clicks.db")
    try:
        digest_id = _digest(db, counted, ["https://yle.example/a", "https://yle.example/b"])
        on = _rendered(db, counted, digest_id)
        off = _rendered(db, direct, digest_id)
    finally:
        db.dispose()
    assert _story_links(off) == [
        "https://yle.example/b",  # newest first
        "https://yle.example/b",
        "https://yle.example/a",
        "https://yle.example/a",
    ]
    assert "/r/" not in off.html + off.text

    # Only the hrefs differ: the text, the markup and the styles (the 390 px layout
    # included: its media query is in the <style> kept in <head>) are byte for byte equal.
    def no_hrefs(html: str) -> str:
        return HREF.sub('href=""', html)

    def no_urls(text: str) -> str:
        return re.sub(r"https?://\S+", "URL", text)

    assert no_hrefs(on.html) == no_hrefs(off.html)
    assert no_urls(on.text) == no_urls(off.text)
    assert "max-width: 620px" in on.html


# -- the redirect ----------------------------------------------------------------------------


def test_a_click_counts_once_and_lands_on_the_source_two_clicks_count_two(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    any_db_url: str,
    source_site: HTTPServer,
) -> None:
    cfg = _config(write_config, any_db_url)
    db = db_for(cfg)
    digest_id = _digest(db, cfg, [f"{source_site.url}/a", f"{source_site.url}/b"])
    rendered = _rendered(db, cfg, digest_id)
    first, a = _link_to(cfg, rendered, f"{source_site.url}/a")
    second, b = _link_to(cfg, rendered, f"{source_site.url}/b")
    assert _counts(db, digest_id) == ({}, 0)
    with served(cfg, db, clock=lambda: NOW) as url:
        landed = httpx.get(url + _path(first), follow_redirects=True, timeout=30)
        assert landed.status_code == 200 and landed.text == "story at /a"
        hop = landed.history[0]
        assert hop.status_code == 302
        assert hop.headers["location"] == f"{source_site.url}/a"
        assert hop.headers["cache-control"] == "no-store"
        assert hop.headers["referrer-policy"] == "no-referrer"
        assert "set-cookie" not in hop.headers
        assert _counts(db, digest_id) == ({a: 1}, 1)

        again = httpx.get(url + _path(second), timeout=30)
        again2 = httpx.get(url + _path(second), timeout=30)
    assert again.status_code == again2.status_code == 302
    assert _counts(db, digest_id) == ({a: 1, b: 2}, 3)
    # the source saw no referrer and no token of ours
    (req,) = [r for r in source_site.requests if r.path == "/a"]
    assert "referer" not in {k.lower() for k in req.headers}


def test_head_redirects_without_counting(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    cfg = _config(write_config)
    db = db_for(cfg)
    digest_id = _digest(db, cfg, ["https://yle.example/a"])
    link = _story_links(_rendered(db, cfg, digest_id))[0]
    with served(cfg, db) as url:
        head = httpx.head(url + _path(link), timeout=30)
    assert head.status_code == 302 and head.headers["location"] == "https://yle.example/a"
    assert "set-cookie" not in head.headers
    assert _counts(db, digest_id) == ({}, 0)


def test_a_tampered_or_foreign_token_is_refused_and_counts_nothing(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    cfg = _config(write_config)
    db = db_for(cfg)
    digest_id = _digest(db, cfg, ["https://yle.example/a"])
    link = _story_links(_rendered(db, cfg, digest_id))[0]
    token = link.rsplit("/", 1)[1]
    flipped = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    other = write_config(EXCHANGE, env={"NEWSEXCHANGE_SECRET_KEY": "not-our-key"}, name="o.yaml")
    swapped = click_url(other, digest_id, 1, None, "https://evil.example/").rsplit("/", 1)[1]
    js = URLSafeSerializer(
        cfg.secret_key.get_secret_value(), salt="newsexchange.digest.click.v1"
    ).dumps([digest_id, 1, None, "javascript:alert(1)"])
    with served(cfg, db) as url:
        answers = [httpx.get(f"{url}/r/{t}", timeout=30) for t in (flipped, swapped, js, "x")]
        head = httpx.head(f"{url}/r/{swapped}", timeout=30)
    for r in answers:
        assert r.status_code == 400, r.text
        assert "location" not in r.headers and "set-cookie" not in r.headers
        assert "evil.example" not in r.text and "javascript" not in r.text
        assert "text/html" in r.headers["content-type"]
        assert r.headers["cache-control"] == "no-store"
    assert 'data-kind="tampered"' in answers[0].text
    assert head.status_code == 400 and "location" not in head.headers
    assert _counts(db, digest_id) == ({}, 0)


def test_a_signed_link_to_a_digest_that_no_longer_exists_is_404(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    cfg = _config(write_config)
    db = db_for(cfg)
    _digest(db, cfg, ["https://yle.example/a"])
    gone = click_url(cfg, 999_999, 1, 1, "https://yle.example/a")
    huge = click_url(cfg, 2**63 - 1, 1, 1, "https://yle.example/a")
    with served(cfg, db) as url:
        answers = [httpx.get(url + _path(u), timeout=30) for u in (gone, huge)]
    assert [r.status_code for r in answers] == [404, 404]
    assert all("location" not in r.headers for r in answers)
    with pytest.raises(ValueError):
        click_url(cfg, 2**63, 1, 1, "https://yle.example/a")  # no id the database cannot hold


def test_concurrent_clicks_lose_none_on_postgresql(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    pg_server_url: Callable[[], str],
) -> None:
    cfg = _config(write_config, pg_server_url())
    db = db_for(cfg)
    digest_id = _digest(db, cfg, ["https://yle.example/a", "https://yle.example/b"])
    first, _, second, _ = _story_links(_rendered(db, cfg, digest_id))
    threads, per_thread = 8, 15
    failures: list[str] = []
    with served(cfg, db) as url:
        start = threading.Barrier(threads)

        def click(link: str) -> None:
            with httpx.Client(timeout=120) as client:
                start.wait(timeout=120)
                for _ in range(per_thread):
                    r = client.get(url + _path(link))
                    if r.status_code != 302:
                        failures.append(f"{r.status_code} {r.text[:80]}")

        workers = [
            threading.Thread(target=click, args=(first if n % 2 else second,))
            for n in range(threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=300)
    assert not failures, failures[:3]
    half = threads // 2 * per_thread
    assert _counts(db, digest_id) == ({1: half, 2: half}, threads * per_thread)


def test_a_draft_s_link_leads_to_the_story_but_counts_nothing(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    cfg = _config(write_config)
    db = db_for(cfg)
    digest_id = _digest(db, cfg, ["https://yle.example/a"], approve=False)
    link = _story_links(_rendered(db, cfg, digest_id))[0]  # what `digest show` renders
    with served(cfg, db) as url:
        r = httpx.get(url + _path(link), timeout=30)
    assert r.status_code == 302 and r.headers["location"] == "https://yle.example/a"
    assert _counts(db, digest_id) == ({}, 0)


def test_counting_directly_makes_the_row_then_adds_to_it(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database], any_db_url: str
) -> None:
    cfg = _config(write_config, any_db_url)
    db = db_for(cfg)
    digest_id = _digest(db, cfg, ["https://yle.example/a"])
    for _ in range(3):
        with db.session() as s:
            count_click(s, digest_id, 1, 5)
    with db.session() as s:
        count_click(s, digest_id, 4, None)
    assert _counts(db, digest_id) == ({1: 3, 4: 1}, 4)
    assert _counts(db, digest_id + 1) == ({}, 0)


def test_a_delivered_link_is_the_same_in_every_copy_and_a_click_on_it_counts_once(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    """Sent through delivery (personalized per recipient) to a real SMTP server: the story
    links do not tell the recipients apart, and one click on one of them counts once."""
    from newsexchange.delivery.send import run_send
    from tests.test_delivery_support import NOW as SENT_AT
    from tests.test_delivery_support import delivery_config, seed_digest

    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    people = [("Анна Смирнова", "anna@example.org"), ("", "desk@example.org")]
    digest_id = seed_digest(db, cfg, people)
    assert run_send(db, cfg, now=SENT_AT, digest_id=digest_id).ok
    copies = []
    for _, address in people:
        (msg,) = smtp_server.received_by(address)
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        links = [h for h in HREF.findall(html) if "/r/" in h]
        assert links and all(h.startswith(f"{cfg.public_url}/r/") for h in links)
        assert all(h in text for h in links)
        copies.append(links)
    assert copies[0] == copies[1], "a story link must not tell one recipient from another"
    click = read_click(cfg, copies[0][0].rsplit("/", 1)[1])
    assert click.digest_id == digest_id
    with served(cfg, db) as url:
        r = httpx.get(url + _path(copies[0][0]), timeout=30)
    assert r.status_code == 302 and r.headers["location"] == click.target
    assert "set-cookie" not in r.headers
    assert _counts(db, digest_id) == ({click.position: 1}, 1)


def test_a_click_logs_nothing_about_the_reader(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the app logs (every logger that reaches the root: ours, Starlette's, SQLAlchemy's)
    names neither the reader's address nor their user agent nor the link. uvicorn's access log
    does not propagate to the root; `newsexchange serve` turns it off (commands/service.py)."""
    cfg = _config(write_config)
    db = db_for(cfg)
    digest_id = _digest(db, cfg, ["https://yle.example/a"])
    link = _story_links(_rendered(db, cfg, digest_id))[0]
    agent = "ReaderAgent/1.0 (tracking-canary)"
    # served as `newsexchange serve` serves (uvicorn's access log off: commands/service.py)
    server = WebServer(create_app(cfg, db)).start()
    try:
        with caplog.at_level(logging.DEBUG):
            r = httpx.get(server.url + _path(link), headers={"User-Agent": agent}, timeout=30)
            bad = httpx.get(f"{server.url}/r/nonsense", headers={"User-Agent": agent}, timeout=30)
    finally:
        server.stop()
    assert (r.status_code, bad.status_code) == (302, 400)
    server_side = [
        rec for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))
    ]  # the test's own HTTP client logs its requests; the server must not
    logged = "\n".join(f"{rec.getMessage()} {vars(rec)}" for rec in server_side)
    assert "tracking-canary" not in logged
    assert "127.0.0.1" not in logged.replace(cfg.public_url, "")
    assert link.rsplit("/", 1)[1] not in logged
