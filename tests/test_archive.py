"""The public archive, "view online" and the Atom feed, over the real app (uvicorn), with
digests that went through the real steps: built, approved by an editor, sent (outbox)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, date, datetime

import feedparser
import httpx
from sqlalchemy import select

from newsexchange.config import Config, database_url
from newsexchange.db import Database, Digest, Item, Source, Translation
from tests.test_web_ops import served

EXCHANGE = """\
sources:
  - {id: yle, name: Yle Pohjois-Karjala, region: joensuu, url: "https://yle.example/rss", language: fi}
lists:
  ptz-media: {language: ru}
exchanges:
  - id: fi-to-ru
    name: Новости Йоэнсуу
    from: [joensuu]
    to: petrozavodsk
    language: ru
    editors: [editor@example.fi]
    lists: [ptz-media]
"""
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ATOM = "{http://www.w3.org/2005/Atom}"


def _items(db: Database, period: date, titles: list[tuple[str, str]]) -> None:
    with db.session() as s:
        if s.get(Source, "yle") is None:
            s.add(
                Source(
                    id="yle", config_url="https://yle.example/rss", url="https://yle.example/rss"
                )
            )
            s.flush()
        for n, (fi, ru) in enumerate(titles):
            item = Item(
                source_id="yle",
                identity=f"{period}-{n}",
                link=f"https://yle.example/{period}/{n}",
                title=fi,
                summary_text=f"{fi} (fi)",
                region="joensuu",
                language="fi",
                published_at=datetime(period.year, period.month, period.day + 2, 9, tzinfo=UTC),
                content_hash=f"h{period}{n}",
            )
            item.translations.append(
                Translation(
                    language="ru",
                    title=ru,
                    summary_text=f"{ru} (ru)",
                    status="done",
                    provider="test",
                )
            )
            s.add(item)


def _digest(db: Database, cfg: Config, period: date, *, approve: bool, send: bool) -> int:
    from newsexchange.approval.decide import decide
    from newsexchange.delivery.send import run_send
    from newsexchange.digest import build_digest

    report = build_digest(db, cfg, "fi-to-ru", period_start=period, now=NOW)
    if approve:
        with db.session() as s:
            digest = s.get(Digest, report.id)
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
    if send:
        run_send(db, cfg, now=NOW, digest_id=report.id)
    return int(report.id)


def test_archive_lists_sent_digests_and_view_online_shows_only_approved_ones(
    write_config: Callable[..., Config],
) -> None:
    cfg = write_config(EXCHANGE)
    db = Database(database_url(cfg))
    try:
        _items(db, date(2026, 10, 1), [("Joensuun tori avautuu", "В Йоэнсуу открывается рынок")])
        _items(db, date(2026, 10, 16), [("Uusi silta", "Новый мост")])
        _items(db, date(2026, 11, 1), [("Luonnos", "Черновик")])
        sent = _digest(db, cfg, date(2026, 10, 1), approve=True, send=True)
        approved = _digest(db, cfg, date(2026, 10, 16), approve=True, send=False)
        draft = _digest(db, cfg, date(2026, 11, 1), approve=False, send=False)
        with db.session() as s:
            states = {i: st for i, st in s.execute(select(Digest.id, Digest.state))}
        assert states[sent] == "sent", states

        with served(cfg, db) as url:
            index = httpx.get(f"{url}/", follow_redirects=True)
            page = httpx.get(f"{url}/archive/fi-to-ru")
            view_sent = httpx.get(f"{url}/digests/{sent}")
            view_approved = httpx.get(f"{url}/digests/{approved}")
            view_draft = httpx.get(f"{url}/digests/{draft}")
            view_missing = httpx.get(f"{url}/digests/99999")
            view_huge = httpx.get(f"{url}/digests/99999999999999999999")  # past int64
            view_word = httpx.get(f"{url}/digests/latest")
            unknown = httpx.get(f"{url}/archive/no-such-exchange")

        assert index.status_code == 200
        assert index.url.path == "/archive"
        assert "Новости Йоэнсуу" in index.text
        assert f'href="/digests/{sent}"' in index.text
        # only sent digests are listed
        assert f'href="/digests/{approved}"' not in index.text
        assert f'href="/digests/{draft}"' not in index.text
        assert page.status_code == 200
        assert "1–15 октября 2026" in page.text  # the period in the readers' language
        assert 'type="application/atom+xml"' in page.text

        assert view_sent.status_code == 200
        assert "В Йоэнсуу открывается рынок" in view_sent.text
        assert "%%UNSUBSCRIBE_URL%%" not in view_sent.text
        assert "script-src" not in view_sent.headers["content-security-policy"]
        assert "default-src 'none'" in view_sent.headers["content-security-policy"]
        assert view_approved.status_code == 200, "approved digests can be viewed online"
        assert "Новый мост" in view_approved.text
        assert view_draft.status_code == 404
        assert "Черновик" not in view_draft.text
        assert view_missing.status_code == 404
        assert view_huge.status_code == 404 and view_word.status_code == 404
        assert unknown.status_code == 404
    finally:
        db.dispose()


def test_atom_feed_carries_each_sent_digest_and_escapes_hostile_titles(
    write_config: Callable[..., Config],
) -> None:
    cfg = write_config(EXCHANGE)
    db = Database(database_url(cfg))
    try:
        hostile = '<script>alert("x")</script> Карелия & <b>мост</b>'
        _items(db, date(2026, 10, 1), [("Vaarallinen otsikko", hostile), ("Toinen", "Второй")])
        _items(db, date(2026, 10, 16), [("Kolmas", "Третий")])
        first = _digest(db, cfg, date(2026, 10, 1), approve=True, send=True)
        second = _digest(db, cfg, date(2026, 10, 16), approve=True, send=True)
        with served(cfg, db) as url:
            r = httpx.get(f"{url}/archive/fi-to-ru/atom.xml")
            page = httpx.get(f"{url}/archive/fi-to-ru")
            view = httpx.get(f"{url}/digests/{first}")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/atom+xml")
        root = ET.fromstring(r.content)  # noqa: S314 - our own feed, checked well-formed
        assert root.tag == f"{ATOM}feed"
        feed = feedparser.parse(r.content)
        assert feed.bozo == 0, feed.get("bozo_exception")
        assert feed.feed.title == "Новости Йоэнсуу"
        links = [e.link for e in feed.entries]
        assert links == [f"{cfg.public_url}/digests/{second}", f"{cfg.public_url}/digests/{first}"]
        content = feed.entries[1].content[0].value
        # the title arrives as text in the feed reader, never as markup
        assert "<script>" not in content
        assert "&lt;script&gt;" in content
        assert "Второй" in content
        assert "<script>" not in page.text
        assert "<script>" not in view.text
        assert "&lt;script&gt;" in view.text
    finally:
        db.dispose()
