"""The fetch step end to end: a loopback HTTP server serving crafted and corpus feeds,
``run_fetch`` storing into SQLite and PostgreSQL, and the ``fetch`` / ``items`` commands."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from sqlalchemy import func, select

from newsexchange.config import Config
from newsexchange.db import Database, Item, Source, Translation
from newsexchange.ingest import FetchReport, run_fetch
from tests.conftest import CORPUS, REPO
from tests.servers import HTTPServer, Request, Response, allow_private

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
FETCH = """\
fetch: {connect_timeout: 1, read_timeout: 1, total_timeout: 4, retries: 1, interval_minutes: 30}
"""


def fetch_yaml(server: HTTPServer) -> str:
    """FETCH with the loopback test server in ``fetch.allow_private`` (else it is refused)."""
    return FETCH.replace("}", ", " + allow_private(server) + "}")


FI_STORIES = [
    (
        "Joensuun kaupunki avaa uuden kirjaston ensi keväänä",
        "Joensuun kaupunki kertoi maanantaina, että uusi pääkirjasto avataan keskustassa ensi keväänä.",
    ),
    (
        "Pohjois-Karjalan maakuntaliitto myönsi rahoitusta rajayhteistyölle",
        "Maakuntaliitto rahoittaa kolmea uutta hanketta Karjalan tasavallan kanssa ensi vuonna.",
    ),
    (
        "Itä-Suomen yliopisto tutkii boreaalisia metsiä",
        "Yliopiston tutkijat aloittavat laajan metsätutkimuksen Pohjois-Karjalassa syksyllä.",
    ),
]


def rss(
    items: list[dict[str, str | None]], *, title: str = "Feed", encoding: str = "utf-8"
) -> bytes:
    parts = [
        f'<?xml version="1.0" encoding="{encoding}"?>\n<rss version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>http://example.org/</link>"
    ]
    for it in items:
        parts.append("<item>")
        for tag in ("title", "link", "guid", "pubDate", "description"):
            if it.get(tag) is not None:
                parts.append(f"<{tag}>{escape(str(it[tag]))}</{tag}>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "".join(parts).encode(encoding)


def fi_items(n: int = 3, *, prefix: str = "fi") -> list[dict[str, str | None]]:
    return [
        {
            "title": FI_STORIES[i % len(FI_STORIES)][0],
            "link": f"http://example.fi/{prefix}/{i}?utm_source=rss",
            "guid": f"{prefix}-{i}",
            "pubDate": format_datetime(NOW - timedelta(hours=i + 1)),
            "description": FI_STORIES[i % len(FI_STORIES)][1],
        }
        for i in range(n)
    ]


def sources_yaml(*entries: tuple[str, str, str]) -> str:
    lines = ["sources:"]
    for sid, url, extra in entries:
        lines.append(f'  - {{id: {sid}, region: joensuu, language: fi, url: "{url}"{extra}}}')
    return "\n".join(lines) + "\n"


@pytest.fixture
def setup(
    write_config: Callable[..., Config], http_server: HTTPServer, tmp_path: Path
) -> Iterator[Callable[..., tuple[Config, Database]]]:
    opened: list[Database] = []

    def make(
        *entries: tuple[str, str, str], db_url: str | None = None, regions_extra: str = ""
    ) -> tuple[Config, Database]:
        cfg = write_config(fetch_yaml(http_server) + sources_yaml(*entries) + regions_extra)
        db = Database(db_url or f"sqlite:///{tmp_path}/ingest.db")
        opened.append(db)
        return cfg, db

    yield make
    for d in opened:
        d.dispose()


def count_items(db: Database, source: str | None = None) -> int:
    with db.session() as s:
        q = select(func.count()).select_from(Item)
        if source:
            q = q.where(Item.source_id == source)
        return int(s.scalar(q) or 0)


def source_row(db: Database, sid: str) -> Source:
    with db.session() as s:
        row = s.get(Source, sid)
        assert row is not None
        return row


def outcome(report: FetchReport, sid: str) -> dict[str, object]:
    return next(r for r in report.to_json()["results"] if r["source"] == sid)


# -- conditional GET, idempotence, updates ----------------------------------------------------


def test_second_fetch_sends_conditional_get_and_stores_nothing(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    body = rss(fi_items(3))

    def handler(req: Request) -> Response:
        if req.header("If-None-Match") == '"v1"':
            return Response(304)
        return Response(
            200, body, {"ETag": '"v1"', "Last-Modified": "Mon, 23 Nov 2026 08:00:00 GMT"}
        )

    http_server.route("/feed", handler)
    cfg, db = setup(("a", f"{http_server.url}/feed", ""))
    first = run_fetch(db, cfg, now=NOW)
    assert (first.ok, first.new_items) == (1, 3)
    second = run_fetch(db, cfg, now=NOW + timedelta(minutes=30))
    assert (second.ok, second.not_modified, second.new_items, second.updated_items) == (0, 1, 0, 0)
    assert "parser" not in outcome(second, "a")  # 304: nothing was parsed
    req = http_server.requests_to("/feed")[-1]
    assert req.header("If-None-Match") == '"v1"'
    assert req.header("If-Modified-Since") == "Mon, 23 Nov 2026 08:00:00 GMT"
    assert count_items(db) == 3
    assert source_row(db, "a").last_status == 304


def test_refetch_without_validators_changes_nothing(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer, any_db_url: str
) -> None:
    http_server.route("/feed", Response(200, rss(fi_items(3))))
    cfg, db = setup(("a", f"{http_server.url}/feed", ""), db_url=any_db_url)
    run_fetch(db, cfg, now=NOW)
    with db.session() as s:
        before = {(i.id, i.updated_at, i.content_hash) for i in s.scalars(select(Item))}
    again = run_fetch(db, cfg, now=NOW + timedelta(hours=1))
    assert (again.ok, again.new_items, again.updated_items) == (1, 0, 0)
    with db.session() as s:
        after = {(i.id, i.updated_at, i.content_hash) for i in s.scalars(select(Item))}
    assert before == after


def test_changed_item_is_updated_in_place(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer, any_db_url: str
) -> None:
    items = fi_items(3)
    http_server.route("/feed", Response(200, rss(items)))
    cfg, db = setup(("a", f"{http_server.url}/feed", ""), db_url=any_db_url)
    run_fetch(db, cfg, now=NOW)
    with db.session() as s:
        old = s.scalars(select(Item).where(Item.link == "http://example.fi/fi/1")).one()
    items[1] = {**items[1], "title": "Korjattu: " + str(items[1]["title"])}
    http_server.route("/feed", Response(200, rss(items)))
    later = NOW + timedelta(hours=2)
    report = run_fetch(db, cfg, now=later)
    assert (report.new_items, report.updated_items) == (0, 1)
    with db.session() as s:
        new = s.scalars(select(Item).where(Item.link == "http://example.fi/fi/1")).one()
    assert new.id == old.id and new.title.startswith("Korjattu: ")
    assert new.updated_at == later and new.first_seen_at == NOW
    assert count_items(db) == 3


def test_items_are_cleaned_on_the_way_in(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    hostile = (
        '<p onclick="steal()">Kaupunki tiedottaa.<script>alert(1)</script>'
        '<a href="javascript:alert(2)">klik</a><img src="x" onerror="alert(3)">'
        '<iframe src="http://evil.example/"></iframe><a href="/sivu?utm_source=x&amp;id=5">lisää</a></p>'
    )
    items = [
        {
            "title": "Turvallinen <b>otsikko</b>",
            "link": "http://example.fi/a?utm_medium=rss&fbclid=1",
            "guid": "h1",
            "pubDate": format_datetime(NOW),
            "description": hostile,
        },
        {
            "title": "Ilman päivämäärää",
            "link": "http://example.fi/b",
            "guid": "h2",
            "description": "Tällä uutisella ei ole päivämäärää.",
        },
    ]
    http_server.route("/feed", Response(200, rss(items)))
    cfg, db = setup(("a", f"{http_server.url}/feed", ""))
    run_fetch(db, cfg, now=NOW)
    with db.session() as s:
        a = s.scalars(select(Item).where(Item.link == "http://example.fi/a")).one()
        b = s.scalars(select(Item).where(Item.link == "http://example.fi/b")).one()
    html = a.summary_html.lower()
    for bad in ("<script", "onclick", "onerror", "javascript:", "<iframe", "utm_source"):
        assert bad not in html, bad
    assert a.link == "http://example.fi/a"
    assert "<" not in a.title
    assert b.published_at == NOW and b.date_from_feed is False


# -- failures -------------------------------------------------------------------------------


def test_one_broken_source_does_not_affect_the_others(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    http_server.route("/good1", Response(200, rss(fi_items(2, prefix="g1"))))
    http_server.route("/good2", Response(200, rss(fi_items(2, prefix="g2"))))
    http_server.route("/broken", Response(500, b"down"))
    http_server.route(
        "/html",
        Response(
            200,
            b"<!doctype html><html><body><p>Welcome</p></body></html>",
            {"Content-Type": "text/html; charset=utf-8"},
        ),
    )
    cfg, db = setup(
        ("good1", f"{http_server.url}/good1", ""),
        ("broken", f"{http_server.url}/broken", ""),
        ("html", f"{http_server.url}/html", ""),
        ("good2", f"{http_server.url}/good2", ""),
    )
    report = run_fetch(db, cfg, now=NOW)
    data = report.to_json()
    assert (data["ok"], data["failed"], data["new_items"]) == (2, 2, 4)
    failures = {f["source"]: f for f in data["failures"]}
    assert failures["broken"]["status"] == 500 and "500" in failures["broken"]["error"]
    assert failures["html"]["error"]  # an HTML page where a feed was expected, said so
    assert count_items(db, "good1") == 2 and count_items(db, "good2") == 2
    row = source_row(db, "broken")
    assert row.consecutive_failures == 1 and row.last_error and row.failing_since == NOW


def test_failing_source_backs_off_up_to_a_day_and_recovers(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    state = {"up": False}
    http_server.route(
        "/feed",
        lambda _r: Response(200, rss(fi_items(1))) if state["up"] else Response(404, b"gone"),
    )
    cfg, db = setup(("a", f"{http_server.url}/feed", ""))
    t = NOW
    waits: list[timedelta] = []
    for _ in range(8):
        report = run_fetch(db, cfg, now=t)
        assert report.failed == 1
        row = source_row(db, "a")
        assert row.next_attempt_at is not None
        waits.append(row.next_attempt_at - t)
        # Before the next attempt is due the source is skipped, not fetched.
        early = run_fetch(db, cfg, now=t + waits[-1] / 2)
        assert early.skipped == 1 and early.to_json()["results"][0]["status"] == "skipped"
        t = row.next_attempt_at
    assert waits[:3] == [timedelta(minutes=30), timedelta(hours=1), timedelta(hours=2)]
    assert waits[-1] == timedelta(hours=24)
    assert len(http_server.requests_to("/feed")) == 8
    assert run_fetch(db, cfg, now=t - timedelta(hours=1), force=True).failed == 1  # --all
    state["up"] = True
    report = run_fetch(db, cfg, now=t + timedelta(days=2))
    assert report.ok == 1
    row = source_row(db, "a")
    assert (row.consecutive_failures, row.next_attempt_at, row.last_error) == (0, None, None)


def test_retry_after_then_success_in_one_run(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    calls: list[int] = []

    def handler(_req: Request) -> Response:
        calls.append(1)
        if len(calls) == 1:
            return Response(429, b"", {"Retry-After": "0"})
        return Response(200, rss(fi_items(2)))

    http_server.route("/feed", handler)
    cfg, db = setup(("a", f"{http_server.url}/feed", ""))
    report = run_fetch(db, cfg, now=NOW)
    assert (report.ok, report.new_items, len(calls)) == (1, 2, 2)


def test_timeout_is_a_per_source_error(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    http_server.route("/slow", Response(200, rss(fi_items(1)), delay=1.5))
    http_server.route("/fast", Response(200, rss(fi_items(1, prefix="f"))))
    cfg, db = setup(
        ("slow", f"{http_server.url}/slow", ""), ("fast", f"{http_server.url}/fast", "")
    )
    cfg = cfg.model_copy(
        update={"fetch": cfg.fetch.model_copy(update={"read_timeout": 0.3, "retries": 0})}
    )
    report = run_fetch(db, cfg, now=NOW)
    assert outcome(report, "fast")["status"] == "ok"
    assert "timeout" in str(outcome(report, "slow")["error"])


def test_permanent_redirect_updates_the_stored_url(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    http_server.route("/old", Response(301, b"", {"Location": "/new"}))
    http_server.route("/new", Response(200, rss(fi_items(1))))
    cfg, db = setup(("a", f"{http_server.url}/old", ""))
    report = run_fetch(db, cfg, now=NOW)
    assert outcome(report, "a")["moved_to"] == f"{http_server.url}/new"
    assert source_row(db, "a").url == f"{http_server.url}/new"
    run_fetch(db, cfg, now=NOW + timedelta(hours=1))
    assert len(http_server.requests_to("/old")) == 1  # the second run went straight to /new
    assert len(http_server.requests_to("/new")) == 2


def test_redirect_loop_and_oversized_body_are_clear_errors(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    http_server.route("/loop", Response(302, b"", {"Location": "/loop"}))
    http_server.route("/big", Response(200, b"<rss>" + b" " * 2_000_000))
    cfg, db = setup(("loop", f"{http_server.url}/loop", ""), ("big", f"{http_server.url}/big", ""))
    cfg = cfg.model_copy(
        update={"fetch": cfg.fetch.model_copy(update={"max_body_bytes": 1_000_000})}
    )
    report = run_fetch(db, cfg, now=NOW)
    assert "redirect" in str(outcome(report, "loop")["error"])
    assert "limit" in str(outcome(report, "big")["error"])


def test_entity_bomb_and_truncated_feed_never_crash_the_run(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    lol = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    bomb = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY lol0 "lol">{lol}]>'
        '<rss version="2.0"><channel><title>&lol9;</title><item><title>&lol9;</title>'
        "<guid>x</guid></item></channel></rss>"
    ).encode()
    full = rss(fi_items(3))
    truncated = full[: full.index(b"</item>", full.index(b"</item>") + 1) + 40]
    http_server.route("/bomb", Response(200, bomb, {"Content-Type": "application/rss+xml"}))
    http_server.route("/cut", Response(200, truncated, {"Content-Type": "application/rss+xml"}))
    cfg, db = setup(("bomb", f"{http_server.url}/bomb", ""), ("cut", f"{http_server.url}/cut", ""))
    report = run_fetch(db, cfg, now=NOW)
    with db.session() as s:
        longest = max((len(t) for t in s.scalars(select(Item.title))), default=0)
    assert longest < 10_000  # the entities were never expanded
    cut = outcome(report, "cut")
    assert cut["status"] == "ok" and int(str(cut["new"])) >= 1 and cut.get("problem")


def test_windows_1251_served_with_a_header_comes_out_right(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    title = "Петрозаводск получит новые автобусы"
    items = [
        {
            "title": title,
            "link": "http://example.ru/1",
            "guid": "r1",
            "pubDate": format_datetime(NOW),
            "description": "Администрация города сообщила о закупке тридцати новых автобусов.",
        }
    ]
    body = rss(items, encoding="windows-1251").replace(b' encoding="windows-1251"', b"")
    http_server.route(
        "/ru", Response(200, body, {"Content-Type": "application/rss+xml; charset=windows-1251"})
    )
    cfg, db = setup(("ru", f"{http_server.url}/ru", ""))
    run_fetch(db, cfg, now=NOW)
    with db.session() as s:
        item = s.scalars(select(Item)).one()
    assert item.title == title
    # Declared fi (sources_yaml), detected ru: recorded, not fatal.
    assert item.detected_language == "ru" and item.language_mismatch is True


def test_near_identical_stories_from_two_sources_share_a_story_group(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer, any_db_url: str
) -> None:
    story = (
        "Petroskoin kaupunki ostaa kolmekymmentä uutta bussia ensi vuodeksi",
        "Kaupunki kertoi maanantaina, että uudet bussit tulevat liikenteeseen ensi vuonna.",
    )
    a = [
        {
            "title": story[0],
            "link": "http://a.fi/1",
            "guid": "a1",
            "pubDate": format_datetime(NOW),
            "description": story[1],
        },
        {
            "title": FI_STORIES[2][0],
            "link": "http://a.fi/2",
            "guid": "a2",
            "pubDate": format_datetime(NOW),
            "description": FI_STORIES[2][1],
        },
    ]
    b = [
        {
            "title": story[0] + ":",
            "link": "http://b.fi/9",
            "guid": "b9",
            "pubDate": format_datetime(NOW),
            "description": "Kaupunki kertoi maanantaina, että uudet bussit tulevat ensi vuonna liikenteeseen.",
        }
    ]
    http_server.route("/a", Response(200, rss(a)))
    http_server.route("/b", Response(200, rss(b)))
    cfg, db = setup(("a", f"{http_server.url}/a", ""), db_url=any_db_url)
    run_fetch(db, cfg, now=NOW)  # first source alone, in an earlier run
    cfg2, _ = setup(("a", f"{http_server.url}/a", ""), ("b", f"{http_server.url}/b", ""))
    run_fetch(db, cfg2, now=NOW + timedelta(minutes=5), source_ids=["b"])
    with db.session() as s:
        groups = {
            (i.guid or "").rsplit("/", 1)[-1]: i.story_group_id for i in s.scalars(select(Item))
        }
    assert groups["a1"] is not None and groups["a1"] == groups["b9"]
    assert groups["a2"] is None


# -- corpus --------------------------------------------------------------------------------


def _corpus_sample() -> list[Path]:
    picks: list[Path] = []
    for folder, step in (
        ("wellformed/rss", 12),
        ("wellformed/atom10", 12),
        ("wellformed/sanitize", 25),
        ("illformed", 10),
        ("encoding", 6),
        ("wellformed/rdf", 3),
    ):
        files = sorted((CORPUS / folder).glob("*.xml"))
        picks += files[::step]
    return picks


@pytest.mark.skipif(not CORPUS.exists(), reason=f"feed corpus not found at {CORPUS}")
def test_corpus_feeds_served_over_http_never_crash_and_never_store_scripts(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    files = _corpus_sample()
    assert len(files) > 60
    entries = []
    for i, path in enumerate(files):
        raw = path.read_bytes()
        headers = {}
        for line in raw.split(b"-->", 1)[0].decode("latin-1").splitlines():
            if line.strip().startswith("Header:"):
                name, _, value = line.split(":", 1)[1].strip().partition(":")
                headers[name.strip()] = value.strip()
        http_server.route(f"/c{i}", Response(200, raw, headers))
        entries.append((f"c{i}", f"{http_server.url}/c{i}", ""))
    cfg, db = setup(*entries)
    report = run_fetch(db, cfg, now=NOW)
    data = report.to_json()
    assert data["sources"] == len(files)
    assert data["ok"] + data["failed"] == len(files)
    assert data["ok"] > len(files) * 0.8
    assert all(f["error"] for f in data["failures"])
    with db.session() as s:
        for html in s.scalars(select(Item.summary_html)):
            low = html.lower()
            assert "<script" not in low and "javascript:" not in low and " onerror" not in low


# -- the commands ----------------------------------------------------------------------------


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "newsexchange", *args, "--config", str(tmp_path / "feeds.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "NEWSEXCHANGE_SECRET_KEY": "x", "HOME": str(tmp_path)},
    )


def test_fetch_and_items_commands_print_one_json_object(
    write_config: Callable[..., Config], http_server: HTTPServer, tmp_path: Path
) -> None:
    http_server.route("/good", Response(200, rss(fi_items(3))))
    http_server.route("/bad", Response(503, b"maintenance"))
    cfg = write_config(
        fetch_yaml(http_server).replace("retries: 1", "retries: 0")
        + sources_yaml(
            ("good", f"{http_server.url}/good", ""), ("bad", f"{http_server.url}/bad", "")
        )
    )
    out = cli(tmp_path, "fetch", "--json")
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert (data["sources"], data["ok"], data["failed"], data["new_items"]) == (2, 1, 1, 3)
    assert data["failures"][0]["source"] == "bad" and data["failures"][0]["status"] == 503

    db = Database(f"sqlite:///{tmp_path}/var/test.db")
    try:
        with db.session() as s:
            item = s.scalars(select(Item).where(Item.link == "http://example.fi/fi/0")).one()
            s.add(
                Translation(
                    item_id=item.id, language="ru", title="Перевод", provider="libre", status="done"
                )
            )
    finally:
        db.dispose()
    out = cli(tmp_path, "items", "--json", "--limit", "2")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)["items"]
    assert [i["title"] for i in listed] == [FI_STORIES[0][0], FI_STORIES[1][0]]  # newest first
    first = listed[0]
    for key in (
        "id",
        "source",
        "region",
        "category",
        "language",
        "detected_language",
        "title",
        "link",
        "published_at",
        "updated_at",
        "story_group",
        "translations",
    ):
        assert key in first, key
    assert first["translations"] == [
        {
            "language": "ru",
            "title": "Перевод",
            "summary": None,
            "provider": "libre",
            "status": "done",
            "error": None,
        }
    ]
    assert cfg.source("good").region == first["region"]

    out = cli(tmp_path, "fetch", "--json", "--source", "nope")
    assert out.returncode == 2 and "nope" in json.loads(out.stdout)["error"]


# -- HTML pages, files, config changes -----------------------------------------------------------

EVENTS_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Tapahtumat</title></head>
<body><main>
<article class="event"><h2>Konsertti Carelia-salissa</h2><a href="/tapahtumat/1?utm_source=x">Lue</a>
<time datetime="2026-11-28T19:00">la 28.11.</time><p>Joensuun kaupunginorkesteri soittaa
Sibeliusta ja Rahmaninovia Carelia-salissa lauantaina.</p></article>
<article class="event"><h2>Joulutori Kauppatorilla</h2><a href="/tapahtumat/2">Lue</a>
<time datetime="2026-12-05T10:00">la 5.12.</time><p>Perinteinen joulutori avataan
Joensuun Kauppatorilla joulukuun ensimmäisenä lauantaina.</p></article>
</main></body></html>"""


def test_html_source_is_read_with_its_selectors(
    write_config: Callable[..., Config], http_server: HTTPServer, tmp_path: Path
) -> None:
    http_server.route(
        "/tapahtumat", Response(200, EVENTS_PAGE, {"Content-Type": "text/html; charset=utf-8"})
    )
    http_server.route(
        "/muutettu",
        Response(
            200, "<html><body><p>Uusi ulkoasu</p></body></html>", {"Content-Type": "text/html"}
        ),
    )
    select_yaml = 'select: {item: "article.event", title: "h2", link: "a@href", date: "time@datetime", summary: "p"}'
    cfg = write_config(
        fetch_yaml(http_server)
        + f"""\
sources:
  - {{id: events, region: joensuu, kind: html, language: fi, category: events,
     url: "{http_server.url}/tapahtumat", {select_yaml}}}
  - {{id: changed, region: joensuu, kind: html, language: fi, category: events,
     url: "{http_server.url}/muutettu", {select_yaml}}}
"""
    )
    db = Database(f"sqlite:///{tmp_path}/html.db")
    try:
        report = run_fetch(db, cfg, now=NOW)
        assert outcome(report, "events")["status"] == "ok"
        assert "article.event" in str(outcome(report, "changed")["error"])
        with db.session() as s:
            items = {i.title: i for i in s.scalars(select(Item))}
        assert set(items) == {"Konsertti Carelia-salissa", "Joulutori Kauppatorilla"}
        concert = items["Konsertti Carelia-salissa"]
        assert concert.link == f"{http_server.url}/tapahtumat/1"
        assert concert.category == "events"
        assert "text/html" in (http_server.requests_to("/tapahtumat")[0].header("Accept") or "")
    finally:
        db.dispose()


def test_file_sources_relative_to_the_config_and_unchanged_files_are_not_reparsed(
    write_config: Callable[..., Config], tmp_path: Path
) -> None:
    (tmp_path / "samples").mkdir()
    sample = tmp_path / "samples" / "uutiset.xml"
    sample.write_bytes(rss(fi_items(2)))
    cfg = write_config(FETCH + sources_yaml(("sample", "file:samples/uutiset.xml", "")))
    db = Database(f"sqlite:///{tmp_path}/files.db")
    try:
        assert run_fetch(db, cfg, now=NOW).new_items == 2
        assert run_fetch(db, cfg, now=NOW + timedelta(minutes=30)).not_modified == 1
        sample.write_bytes(rss(fi_items(3)))
        assert run_fetch(db, cfg, now=NOW + timedelta(hours=1)).new_items == 1
    finally:
        db.dispose()


def test_url_changed_in_config_starts_over_without_old_validators(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    http_server.route("/v1", Response(200, rss(fi_items(1)), {"ETag": '"old"'}))
    http_server.route("/v2", Response(200, rss(fi_items(1, prefix="v2")), {"ETag": '"new"'}))
    cfg, db = setup(("a", f"{http_server.url}/v1", ""))
    run_fetch(db, cfg, now=NOW)
    cfg2, _ = setup(("a", f"{http_server.url}/v2", ""))
    report = run_fetch(db, cfg2, now=NOW + timedelta(minutes=30))
    assert report.ok == 1 and report.new_items == 1
    assert http_server.requests_to("/v2")[0].header("If-None-Match") is None
    assert source_row(db, "a").etag == '"new"'


def test_two_concurrent_runs_store_each_item_once(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer, any_db_url: str
) -> None:
    import threading

    barrier = threading.Barrier(2, timeout=5)
    body = rss(fi_items(3))

    def handler(_req: Request) -> Response:
        barrier.wait()  # both runs have their request in flight before either gets an answer
        return Response(200, body)

    http_server.route("/feed", handler)
    cfg, db = setup(("a", f"{http_server.url}/feed", ""), db_url=any_db_url)
    reports: list[FetchReport] = []

    def run() -> None:
        reports.append(run_fetch(db, cfg, now=NOW))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert [r.failed for r in reports] == [0, 0]
    assert count_items(db) == 3


def test_worker_processes_store_the_same_items_as_the_in_process_path(
    write_config: Callable[..., Config],
    http_server: HTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import newsexchange.ingest.pipeline as pipeline

    title = "Петрозаводск получит новые автобусы"
    ru = [
        {
            "title": title,
            "link": "http://example.ru/1",
            "guid": "r1",
            "pubDate": format_datetime(NOW),
            "description": "Администрация города сообщила о закупке тридцати новых автобусов.",
        }
    ]
    http_server.route("/fi", Response(200, rss(fi_items(3))))
    http_server.route("/ru", Response(200, rss(ru, encoding="windows-1251")))
    http_server.route(
        "/html", Response(200, b"<html><body>no feed</body></html>", {"Content-Type": "text/html"})
    )
    cfg = write_config(
        fetch_yaml(http_server)
        + sources_yaml(
            ("fi", f"{http_server.url}/fi", ""),
            ("ru", f"{http_server.url}/ru", ""),
            ("html", f"{http_server.url}/html", ""),
        )
    )

    def stored(db_name: str) -> tuple[dict[str, object], list[tuple[object, ...]]]:
        db = Database(f"sqlite:///{tmp_path}/{db_name}")
        try:
            report = run_fetch(db, cfg, now=NOW)
            with db.session() as s:
                rows = sorted(
                    (
                        i.source_id,
                        i.identity,
                        i.title,
                        i.summary_html,
                        i.fingerprint,
                        i.detected_language,
                        i.language_mismatch,
                        i.published_at,
                    )
                    for i in s.scalars(select(Item))
                )
            data = report.to_json()
            return {k: data[k] for k in ("ok", "failed", "new_items")}, rows
        finally:
            db.dispose()

    in_process = stored("a.db")
    assert cfg.fetch.parse_workers == 0  # the default: parse in the fetching process
    monkeypatch.setattr(pipeline, "POOL_MIN_SOURCES", 1)
    cfg = cfg.model_copy(update={"fetch": cfg.fetch.model_copy(update={"parse_workers": 1})})
    with_workers = stored("b.db")
    assert in_process == with_workers
    assert "parse workers failed" not in caplog.text
    assert in_process[0] == {"ok": 2, "failed": 1, "new_items": 4}


def test_broken_parse_workers_fall_back_to_parsing_in_process(
    setup: Callable[..., tuple[Config, Database]],
    http_server: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from concurrent.futures import ProcessPoolExecutor

    import newsexchange.ingest.pipeline as pipeline

    def dead_pool(_workers: int, _n: int) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(max_workers=1)
        pool.shutdown()  # submit() now raises, as a pool whose workers died does
        return pool

    monkeypatch.setattr(pipeline, "_make_pool", dead_pool)
    http_server.route("/a", Response(200, rss(fi_items(2))))
    http_server.route("/b", Response(200, rss(fi_items(3, prefix="b"))))
    cfg, db = setup(("a", f"{http_server.url}/a", ""), ("b", f"{http_server.url}/b", ""))
    report = run_fetch(db, cfg, now=NOW)
    assert (report.ok, report.failed, report.new_items) == (2, 0, 5)
    assert caplog.text.count("parse workers failed") == 1


def test_progress_is_reported_per_source_and_a_failing_callback_stops_nothing(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    http_server.route("/a", Response(200, rss(fi_items(1))))
    http_server.route("/b", Response(200, rss(fi_items(1, prefix="b"))))
    cfg, db = setup(("a", f"{http_server.url}/a", ""), ("b", f"{http_server.url}/b", ""))
    seen: list[tuple[str, int, int]] = []

    def progress(outcome: object, done: int, total: int) -> None:
        seen.append((getattr(outcome, "source", ""), done, total))
        raise RuntimeError("the terminal went away")

    report = run_fetch(db, cfg, now=NOW, progress=progress)
    assert report.ok == 2 and report.new_items == 2
    assert sorted(s for s, _d, _t in seen) == ["a", "b"]
    assert [(d, t) for _s, d, t in seen] == [(1, 2), (2, 2)]
