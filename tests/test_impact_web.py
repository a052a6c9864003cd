"""The impact pages over the real app (uvicorn on loopback) and real PostgreSQL: one digest's
numbers and pick-ups, the editors' confirm/reject (review token + CSRF), and the exchange's
year with its SVG charts and its printable summary.

The rows are seeded directly (sources, items, a sent digest, deliveries, clicks, pick-ups):
the pages read them through ``impact/report.py`` and decide through ``impact/pickups.py``."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from lxml import etree

from newsexchange.approval.tokens import make_action_token
from newsexchange.config import Config
from newsexchange.db import (
    Database,
    Delivery,
    Digest,
    DigestItem,
    Item,
    Pickup,
    Source,
    StoryClicks,
    Suppression,
)
from newsexchange.impact.charts import bar_chart
from tests.test_browser import browser  # noqa: F401  (the Playwright + chromium fixture)
from tests.test_web_ops import served

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"

EXCHANGES = """\
sources:
  - {id: yle, name: Yle Pohjois-Karjala, region: joensuu, url: "https://yle.example/rss", language: fi}
  - {id: stolica, name: Столица на Онего, region: petrozavodsk, url: "https://stolica.example/rss", language: ru}
  - {id: ptzgovorit, name: Петрозаводск говорит, region: petrozavodsk, url: "https://ptz.example/rss", language: ru}
lists:
  ptz-media: {language: ru}
  jns-media: {language: fi}
exchanges:
  - id: fi-to-ru
    name: Новости Йоэнсуу
    from: [joensuu]
    to: petrozavodsk
    language: ru
    editors: [editor@example.fi]
    lists: [ptz-media]
  - id: ru-to-fi
    name: Petroskoin uutiset
    from: [petrozavodsk]
    to: joensuu
    language: fi
    editors: [toimittaja@example.ru]
    lists: [jns-media]
"""


def _item(
    s: object, source: str, n: str, title: str, region: str, lang: str, when: datetime
) -> Item:
    item = Item(
        source_id=source,
        identity=n,
        link=f"https://{source}.example/{n}",
        title=title,
        summary_text=title,
        region=region,
        language=lang,
        published_at=when,
        content_hash=f"h-{n}",
    )
    s.add(item)  # type: ignore[attr-defined]
    s.flush()  # type: ignore[attr-defined]
    return item


def _seed(db: Database) -> dict[str, int]:
    """A sent digest of fi-to-ru (two stories) with 5 deliveries (1 bounced, 1 complained),
    clicks 7 and 2, three pick-ups of story 1 (suggested, confirmed, suggested with hostile
    markup) and none of story 2; a sent ru-to-fi digest with one confirmed pick-up."""
    with db.session() as s:
        for sid, url in (
            ("yle", "https://yle.example/rss"),
            ("stolica", "https://stolica.example/rss"),
            ("ptzgovorit", "https://ptz.example/rss"),
        ):
            s.add(Source(id=sid, config_url=url, url=url))
        s.flush()
        a = _item(s, "yle", "a", "Joensuun tori avautuu", "joensuu", "fi", NOW - timedelta(days=60))
        b = _item(s, "yle", "b", "Uusi silta", "joensuu", "fi", NOW - timedelta(days=60))
        p1 = _item(
            s,
            "stolica",
            "p1",
            "В Йоэнсуу открылся рынок",
            "petrozavodsk",
            "ru",
            NOW - timedelta(days=50),
        )
        p2 = _item(
            s, "ptzgovorit", "p2", "Рынок в Йоэнсуу", "petrozavodsk", "ru", NOW - timedelta(days=49)
        )
        p3 = _item(
            s,
            "stolica",
            "p3",
            "<script>alert(1)</script>",
            "petrozavodsk",
            "ru",
            NOW - timedelta(days=48),
        )
        p3.link = "javascript:alert(1)"  # a hostile feed's link: shown as text, never a link
        c = _item(s, "stolica", "c", "Новая школа", "petrozavodsk", "ru", NOW - timedelta(days=40))
        cp = _item(
            s, "yle", "cp", "Petroskoihin uusi koulu", "joensuu", "fi", NOW - timedelta(days=35)
        )
        d = Digest(
            exchange_id="fi-to-ru",
            period_start=date(2026, 9, 14),
            period_end=date(2026, 9, 20),
            language="ru",
            state="sent",
            subject="Новости Йоэнсуу 14–20.09",
            token="t" * 32,
            approved_at=NOW - timedelta(days=59),
            sent_at=NOW - timedelta(days=59),
        )
        d2 = Digest(
            exchange_id="ru-to-fi",
            period_start=date(2026, 10, 5),
            period_end=date(2026, 10, 11),
            language="fi",
            state="sent",
            subject="Petroskoin uutiset 5.–11.10.",
            token="u" * 32,
            approved_at=NOW - timedelta(days=39),
            sent_at=NOW - timedelta(days=39),
        )
        draft = Digest(
            exchange_id="fi-to-ru",
            period_start=date(2026, 11, 9),
            period_end=date(2026, 11, 15),
            language="ru",
            state="draft",
            token="v" * 32,
        )
        s.add_all([d, d2, draft])
        s.flush()
        s.add_all(
            [
                DigestItem(digest_id=d.id, item_id=a.id, position=1),
                DigestItem(digest_id=d.id, item_id=b.id, position=2),
                DigestItem(digest_id=d2.id, item_id=c.id, position=1),
            ]
        )
        for k in range(5):  # j0's server refused it for good (a bounce); the rest arrived
            s.add(
                Delivery(
                    digest_id=d.id,
                    email=f"j{k}@media.example.ru",
                    list_id="ptz-media",
                    language="ru",
                    status="failed" if k == 0 else "sent",
                    last_error="550 5.1.1 no such user" if k == 0 else None,
                    sent_at=None if k == 0 else NOW - timedelta(days=59),
                    message_id=f"<m{k}@x>",
                )
            )
        s.add(
            Suppression(
                email="j0@media.example.ru", reason="bounced", created_at=NOW - timedelta(days=58)
            )
        )
        s.add(
            Suppression(
                email="j1@media.example.ru",
                reason="complained",
                created_at=NOW - timedelta(days=58),
            )
        )
        s.add_all(
            [
                StoryClicks(digest_id=d.id, position=1, item_id=a.id, clicks=7),
                StoryClicks(digest_id=d.id, position=2, item_id=b.id, clicks=2),
            ]
        )
        sug = Pickup(
            digest_id=d.id,
            story_item_id=a.id,
            item_id=p1.id,
            score=0.91,
            evidence={"names": ["Joensuu"], "numbers": ["12"]},
            status="suggested",
            found_at=NOW - timedelta(days=45),
        )
        conf = Pickup(
            digest_id=d.id,
            story_item_id=a.id,
            item_id=p2.id,
            score=0.77,
            evidence={"places": ["Joensuu"]},
            status="confirmed",
            found_at=NOW - timedelta(days=45),
        )
        hostile = Pickup(
            digest_id=d.id,
            story_item_id=a.id,
            item_id=p3.id,
            score=0.55,
            evidence={"sentences": ["<b>x</b>"]},
            status="suggested",
            found_at=NOW - timedelta(days=45),
        )
        other = Pickup(
            digest_id=d2.id,
            story_item_id=c.id,
            item_id=cp.id,
            score=0.88,
            evidence={},
            status="confirmed",
            found_at=NOW - timedelta(days=30),
        )
        s.add_all([sug, conf, hostile, other])
        s.flush()
        return {
            "digest": d.id,
            "digest2": d2.id,
            "draft": draft.id,
            "suggested": sug.id,
            "confirmed": conf.id,
            "hostile": hostile.id,
            "other": other.id,
        }


@pytest.fixture
def site(
    write_config: Callable[..., Config], pg_server_url: Callable[[], str]
) -> tuple[Config, Database, dict[str, int]]:
    cfg = write_config(EXCHANGES)
    db = Database(pg_server_url())
    ids = _seed(db)
    return cfg, db, ids


def _token(
    cfg: Config, digest_id: int, editor: str = "editor@example.fi", action: str = "review"
) -> str:
    return make_action_token(
        cfg,
        digest_id=digest_id,
        version=1,
        editor=editor,
        action=action,  # type: ignore[arg-type]
        now=NOW,
        valid_days=7,
    )


def _count(html: str, name: str) -> int:
    m = re.search(rf'data-count="{name}"><strong>(\d+)</strong>', html)
    assert m, name
    return int(m.group(1))


def _status(db: Database, pickup_id: int) -> tuple[str, str | None]:
    with db.session() as s:
        p = s.get(Pickup, pickup_id)
        assert p is not None
        return p.status, p.decided_by


def test_digest_page_shows_the_numbers_and_pickups_without_buttons_to_the_public(
    site: tuple[Config, Database, dict[str, int]],
) -> None:
    cfg, db, ids = site
    with served(cfg, db, clock=lambda: NOW) as url:
        page = httpx.get(f"{url}/impact/{ids['digest']}")
        draft = httpx.get(f"{url}/impact/{ids['draft']}")
        archive = httpx.get(f"{url}/archive/fi-to-ru")
        huge = httpx.get(f"{url}/impact/99999999999999999999")
        post = httpx.post(
            f"{url}/impact/{ids['digest']}",
            data={"pickup": str(ids["suggested"]), "decision": "confirm"},
        )
    assert page.status_code == 200
    html = page.text
    assert [
        _count(html, k)
        for k in ("sent", "delivered", "bounced", "complained", "unsubscribed", "clicks")
    ] == [5, 4, 1, 1, 0, 9]
    assert 'data-clicks="7"' in html and 'data-clicks="2"' in html
    assert f'data-pickup="{ids["suggested"]}" data-status="suggested"' in html
    assert f'data-pickup="{ids["confirmed"]}" data-status="confirmed"' in html
    assert 'href="https://stolica.example/p1"' in html and "Столица на Онего" in html
    assert "0.91" in html and "<details>" in html and "Joensuu" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "<b>x</b>" not in html
    assert "javascript:" not in html
    assert "<form" not in html and "j0@media" not in html  # no buttons, no recipients
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert draft.status_code == 404 and huge.status_code == 404
    assert f'href="/impact/{ids["digest"]}"' in archive.text
    assert post.status_code == 403
    assert _status(db, ids["suggested"]) == ("suggested", None)


def test_editor_confirms_and_rejects_with_the_review_token_and_csrf(
    site: tuple[Config, Database, dict[str, int]],
) -> None:
    cfg, db, ids = site
    token = _token(cfg, ids["digest"])
    with served(cfg, db, clock=lambda: NOW) as url:
        page = httpx.get(f"{url}/impact/{ids['digest']}", params={"t": token})
        assert page.status_code == 200
        forms = re.findall(r'<form class="decide".*?</form>', page.text, re.S)
        # confirm + reject for each of the two suggestions, reject only for the confirmed one
        assert len(forms) == 5
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf
        no_csrf = httpx.post(
            f"{url}/impact/{ids['digest']}",
            data={"t": token, "pickup": str(ids["suggested"]), "decision": "confirm"},
        )
        ok = httpx.post(
            f"{url}/impact/{ids['digest']}",
            data={
                "t": token,
                "csrf": csrf.group(1),
                "pickup": str(ids["suggested"]),
                "decision": "confirm",
            },
        )
        assert ok.status_code == 303, ok.text
        assert ok.headers["location"].startswith(f"/impact/{ids['digest']}?t=")
        rejected = httpx.post(
            f"{url}/impact/{ids['digest']}",
            data={
                "t": token,
                "csrf": csrf.group(1),
                "pickup": str(ids["hostile"]),
                "decision": "reject",
            },
        )
        foreign = httpx.post(  # a pick-up of another digest, through this digest's page
            f"{url}/impact/{ids['digest']}",
            data={
                "t": token,
                "csrf": csrf.group(1),
                "pickup": str(ids["other"]),
                "decision": "reject",
            },
        )
        after = httpx.get(f"{url}/impact/{ids['digest']}", params={"t": token})
    assert no_csrf.status_code == 403
    assert rejected.status_code == 303
    assert foreign.status_code == 404
    assert _status(db, ids["suggested"]) == ("confirmed", "editor@example.fi")
    assert _status(db, ids["hostile"]) == ("rejected", "editor@example.fi")
    assert _status(db, ids["other"]) == ("confirmed", None)
    assert f'data-pickup="{ids["suggested"]}" data-status="confirmed"' in after.text


@pytest.mark.parametrize(
    "case",
    ["forged", "other_digest", "not_an_editor", "approve_link", "expired"],
)
def test_a_token_that_is_not_this_digests_editors_review_link_is_refused(
    site: tuple[Config, Database, dict[str, int]], case: str
) -> None:
    from newsexchange.approval.tokens import csrf_value

    cfg, db, ids = site
    good = _token(cfg, ids["digest"])
    token = {
        "forged": good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
        "other_digest": _token(cfg, ids["digest2"], editor="toimittaja@example.ru"),
        "not_an_editor": _token(cfg, ids["digest"], editor="someone@example.org"),
        "approve_link": _token(cfg, ids["digest"], action="approve"),
        "expired": good,
    }[case]
    clock = (lambda: NOW + timedelta(days=8)) if case == "expired" else (lambda: NOW)
    with served(cfg, db, clock=clock) as url:
        page = httpx.get(f"{url}/impact/{ids['digest']}", params={"t": token})
        post = httpx.post(
            f"{url}/impact/{ids['digest']}",
            data={
                "t": token,
                "csrf": csrf_value(cfg, token),  # even with a matching CSRF value
                "pickup": str(ids["suggested"]),
                "decision": "confirm",
            },
        )
    assert page.status_code == 403 and "<form" not in page.text
    assert post.status_code == 403
    assert _status(db, ids["suggested"]) == ("suggested", None)


def test_year_page_charts_each_direction_and_prints_a_summary(
    site: tuple[Config, Database, dict[str, int]],
) -> None:
    cfg, db, _ids = site
    with served(cfg, db, clock=lambda: NOW) as url:
        page = httpx.get(f"{url}/impact/fi-to-ru/2026")
        none = httpx.get(f"{url}/impact/fi-to-ru/1999")
        unknown = httpx.get(f"{url}/impact/nope/2026")
    assert page.status_code == 200
    assert none.status_code == 404 and unknown.status_code == 404
    html = page.text
    assert "@media print" in html and "<script" not in html
    svgs = re.findall(r"<svg .*?</svg>", html, re.S)
    assert len(svgs) == 2  # fi-to-ru, then the way back, ru-to-fi
    charts = [etree.fromstring(svg.encode()) for svg in svgs]
    for chart in charts:
        assert chart.get("role") == "img" and chart.get("viewBox")
        assert chart.find(f"{SVG}title") is not None
    bars = {
        (r.get("data-series"), r.get("data-label")): int(r.get("data-value"))
        for r in charts[0].iter(f"{SVG}rect")
        if r.get("data-series")
    }
    # fi-to-ru speaks Russian: its series are named in Russian
    assert bars == {
        ("отправлено материалов", "14.09"): 2,
        ("перепечатано", "14.09"): 1,
        ("переходы", "14.09"): 9,
    }
    assert "9" in charts[0].get("aria-label")
    back = [int(r.get("data-value")) for r in charts[1].iter(f"{SVG}rect") if r.get("data-series")]
    assert back == [1, 1, 0]
    summary = re.search(r'<section id="summary">.*?</section>', html, re.S)
    assert summary
    row = re.search(r'<tr data-direction="fi-to-ru">(.*?)</tr>', summary.group(0), re.S)
    assert row
    assert re.findall(r'<td class="n">(\d+)</td>', row.group(1)) == ["2", "4", "1", "1", "9"]
    assert 'data-outlet="ptzgovorit"' in summary.group(0)
    assert 'data-outlet="stolica"' not in summary.group(0)  # only suggestions there


def test_bar_chart_escapes_and_refuses_ragged_series() -> None:
    svg = bar_chart([("<a>", [1, 0]), ("b", [3, 4])], ["x&y", "z"], title="T <1>")
    root = etree.fromstring(str(svg).encode())
    assert root.find(f"{SVG}title").text.startswith("T <1>")  # type: ignore[union-attr]
    assert [r.get("data-value") for r in root.iter(f"{SVG}rect") if r.get("data-series")] == [
        "1",
        "3",
        "0",
        "4",
    ]
    assert "<a>" not in str(svg)
    empty = etree.fromstring(str(bar_chart([], [], title="none")).encode())
    assert empty.get("role") == "img"
    with pytest.raises(ValueError):
        bar_chart([("a", [1])], ["x", "y"], title="t")


@pytest.mark.browser
def test_year_page_fits_a_phone_and_prints_on_one_page(
    browser: object,  # noqa: F811
    site: tuple[Config, Database, dict[str, int]],
    tmp_path: object,
) -> None:
    cfg, db, _ids = site
    with served(cfg, db, clock=lambda: NOW) as url:
        page = browser.new_page(viewport={"width": 390, "height": 844})  # type: ignore[attr-defined]
        try:
            page.goto(f"{url}/impact/fi-to-ru/2026")
            widths = page.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            wide = page.evaluate(
                "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect()"
                ".right > document.documentElement.clientWidth).map(e => e.tagName + '.' + "
                "e.className + ':' + Math.round(e.getBoundingClientRect().right)).slice(0, 8)"
            )
            assert widths[0] <= widths[1], f"horizontal scroll at 390 px: {widths} {wide}"
            chart = page.locator("figure svg").first
            assert chart.is_visible()
            box = chart.bounding_box()
            assert box is not None and 300 <= box["width"] <= 390 and box["height"] > 100
            page.screenshot(path=f"{tmp_path}/year-390.png", full_page=True)
            pdf = page.pdf(format="A4", print_background=False)
            page.emulate_media(media="print")
            assert not page.locator("nav").is_visible()  # the summary alone, no navigation
            assert page.locator("#summary table").first.is_visible()
            page.screenshot(path=f"{tmp_path}/year-print.png", full_page=True)
        finally:
            page.close()
    pages = re.findall(rb"/Type\s*/Page(?![s\w])", pdf)
    assert len(pages) == 1, f"the printed summary has {len(pages)} pages"


def test_status_page_links_the_impact_page_and_carries_an_editors_link_when_given() -> None:
    from types import SimpleNamespace

    from newsexchange.templating import environment

    template = environment("en").get_template("web/status.html")
    digest = SimpleNamespace(id=41, state="sent", version=2, decided_reason=None)
    ctx = {"digest": digest, "subject": "S", "archive_url": "/digests/41", "total": 0, "when": "x"}
    ctx.update(sent=0, bounced=0, failed=0, unsubscribed=0, pending=0, approved_by=[])
    assert 'href="/impact/41"' in template.render(**ctx)
    # approval.status_page may pass the editor's link (with its review token) at merge
    assert 'href="/impact/41?t=abc"' in template.render(**ctx, impact_url="/impact/41?t=abc")
