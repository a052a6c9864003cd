"""The events section of a digest: which events, in which order, and how each one reads.

Real builds (``build_digest``, and ``newsexchange digest build --json``) on a real SQLite
database; items are stored the way the other digest tests store them. Every date is
relative to ``NOW``, the build time of the 1–15 October 2026 period: the digest goes out at
midnight on 16 October (Moscow for the Russian digest, Helsinki for the Finnish one) and
lists the events starting from then to the end of 31 October. Finland leaves summer time
on Sunday 25 October at 04:00 (EEST → EET), Moscow does not: until then the two clocks
agree and no other-side time is shown; after it they differ by an hour.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from newsexchange.cli import main
from newsexchange.config import Config, database_url
from newsexchange.db import Database, Digest, Item
from newsexchange.digest import build_digest, build_due
from newsexchange.digest.ics import digest_calendar_url
from newsexchange.digest.render import RenderedDigest, format_event, render_digest
from tests.test_browser import browser  # noqa: F401  (the Playwright + chromium fixture)
from tests.test_digest_sample import SAMPLE_CONFIG, add_item

NOW = datetime(2026, 10, 16, 7, 0, tzinfo=UTC)  # 10:00 on the 16th in Moscow and Helsinki
OCT1 = date(2026, 10, 1)
RU = "joensuu-to-petrozavodsk"  # Joensuu's events for readers in Petrozavodsk (Moscow time)
FI = "petrozavodsk-to-joensuu"  # Petrozavodsk's events for readers in Joensuu (Helsinki)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
# Midnight on the 16th in Moscow: the Russian digest's date, in UTC.
RU_DIGEST_DATE = datetime(2026, 10, 15, 21, 0, tzinfo=UTC)
assert NOW - RU_DIGEST_DATE == 10 * HOUR

GLOSSARY = """\
terms:
  - {fi: Joensuu, en: Joensuu, ru: [Йоэнсуу]}
  - {fi: [Petroskoi], en: Petrozavodsk, ru: [Петрозаводск]}
"""


@pytest.fixture
def cfg(write_config: Callable[..., Config], tmp_path: Path) -> Config:
    (tmp_path / "glossary.yaml").write_text(GLOSSARY, encoding="utf-8")
    return write_config(SAMPLE_CONFIG + "translation:\n  glossary: glossary.yaml\n")


@pytest.fixture
def db(cfg: Config) -> Iterator[Database]:
    d = Database(database_url(cfg))  # the database the CLI opens too
    yield d
    d.dispose()


def event(
    db: Database,
    key: str,
    *,
    source: str = "joensuu-events",
    published: datetime,
    start: datetime | None,
    end: datetime | None = None,
    zone: str | None = None,
    all_day: bool = False,
    town: str | None = None,
    venue: str | None = None,
    category: str = "events",
    tr: dict[str, str] | None = None,
) -> int:
    """Store an event item (translated into the other side's language) and return its id."""
    item_id = add_item(
        db,
        key=key,
        source=source,
        title=key,
        published=published,
        summary=f"About {key}.",
        tr=tr or {"ru": f"ru {key}", "fi": f"fi {key}"},
        category=category,
        event_start=start,
    )
    with db.session() as s:
        item = s.get(Item, item_id)
        assert item is not None
        item.event_end = end
        item.event_timezone = zone
        item.all_day = all_day
        item.place_town = town
        item.place_venue = venue
    return item_id


@pytest.fixture
def joensuu(db: Database) -> dict[str, int]:
    return seed_joensuu(db)


def seed_joensuu(db: Database) -> dict[str, int]:
    """Joensuu's items around the October period, for the Russian digest."""
    d = RU_DIGEST_DATE
    return {
        # Announced three weeks before the period began: its start is in the window.
        "early-announced": event(
            db, "early-announced", published=d - 26 * DAY, start=d + 4 * DAY + 18 * HOUR
        ),
        # A whole-weekend festival, 23–25 October in Joensuu, the last day after the switch:
        # stored as the local midnights of its first and last+1 day.
        "festival": event(
            db,
            "festival",
            published=d - 6 * DAY,
            start=datetime(2026, 10, 22, 21, 0, tzinfo=UTC),  # 00:00 EEST on the 23rd
            end=datetime(2026, 10, 25, 22, 0, tzinfo=UTC),  # 00:00 EET on the 26th
            all_day=True,
            zone="Europe/Helsinki",
            town="Joensuu",
            venue="Laulurinne",
        ),
        # A night across the switch: 22:00 EEST on the 24th to 05:00 EET on the 25th.
        "night": event(
            db,
            "night",
            published=d - 5 * DAY,
            start=datetime(2026, 10, 24, 19, 0, tzinfo=UTC),
            end=datetime(2026, 10, 25, 3, 0, tzinfo=UTC),
            zone="Europe/Helsinki",
        ),
        # After the switch: 18:00–20:00 in Joensuu is 19:00–21:00 in Petrozavodsk.
        "concert": event(
            db,
            "concert",
            published=d - 4 * DAY,
            start=datetime(2026, 10, 28, 16, 0, tzinfo=UTC),
            end=datetime(2026, 10, 28, 18, 0, tzinfo=UTC),
            zone="Europe/Helsinki",
            town="Joensuu",
            venue="Carelicum",
        ),
        # No date: about the period it was published in, listed after the dated ones.
        "undated": event(db, "undated", published=d - 7 * DAY, start=None),
        # Over by the time the digest goes out.
        "past": event(db, "past", published=d - 10 * DAY, start=d - 3 * DAY),
        # After the end of the next period: a later digest's.
        "far": event(db, "far", published=d - 8 * DAY, start=d + 17 * DAY),
        # Announced after the digest's date: not known when it goes out.
        "late-news": event(db, "late-news", published=d + 2 * HOUR, start=d + 6 * DAY),
        # A news source's item with a start: an event like the others.
        "lecture": event(
            db,
            "lecture",
            source="karjalainen",
            category="news",
            published=d - 2 * DAY,
            start=d + 14 * DAY + 15 * HOUR,  # 30 October, 14:00 EET, 15:00 in Moscow
            town="Joensuu",
        ),
        "news": add_item(
            db,
            key="news",
            source="yle-pk",
            title="Uutinen",
            published=d - 3 * DAY,
            summary="Uutinen.",
            tr={"ru": "Новость"},
        ),
    }


def render(db: Database, cfg: Config, digest_id: int) -> RenderedDigest:
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        return render_digest(s, cfg, d)


def event_lines(text: str) -> list[str]:
    """The lines of the text part's events section (from its heading to the footer)."""
    section = text.split("События\n=======\n", 1)[1].split("\n--\n", 1)[0]
    return [line.strip() for line in section.splitlines() if line.strip()]


# -- which events ------------------------------------------------------------------------------


def test_events_section_lists_the_window_by_start_whenever_announced(
    cfg: Config, any_db_url: str
) -> None:
    """The candidate query on SQLite and on PostgreSQL."""
    db = Database(any_db_url)
    try:
        ids = seed_joensuu(db)
        rep = build_digest(db, cfg, RU, period_start=OCT1, now=NOW)
    finally:
        db.dispose()
    events = [i["item_id"] for i in rep.items if i["section"] == "events"]
    assert events == [
        ids["early-announced"],
        ids["festival"],
        ids["night"],
        ids["concert"],
        ids["lecture"],
        ids["undated"],
    ]
    assert [i["item_id"] for i in rep.items if i["section"] == "news"] == [ids["news"]]
    considered = {i["item_id"] for i in rep.items} | {lo["item_id"] for lo in rep.left_out}
    assert ids["far"] not in considered
    assert ids["late-news"] not in considered
    assert [(lo["item_id"], lo["reason"]) for lo in rep.left_out] == [
        (ids["past"], "event_before_digest")
    ]


def test_the_past_event_is_left_out_with_its_reason_in_json(
    capsys: pytest.CaptureFixture[str], cfg: Config, db: Database, joensuu: dict[str, int]
) -> None:
    """``newsexchange digest build --json`` (built at the real clock's time: nothing about
    which events are in depends on when the build runs)."""
    code = main(
        ["digest", "build", RU, "--period", "2026-10-01", "--json", "--config", str(cfg.path)]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    past = [lo for lo in data["left_out"] if lo["item_id"] == joensuu["past"]]
    assert past == [
        {
            "item_id": joensuu["past"],
            "title": "past",
            "source": "joensuu-events",
            "reason": "event_before_digest",
            "why": "event before the digest goes out",
            "score": past[0]["score"],
            "event_start": (RU_DIGEST_DATE - 3 * DAY).isoformat(),
        }
    ]
    concert = next(i for i in data["items"] if i["item_id"] == joensuu["concert"])
    assert concert["section"] == "events"
    assert concert["event_start"] == "2026-10-28T16:00:00+00:00"
    assert data["sections"] == {"news": 1, "events": 6}

    code = main(["digest", "show", str(data["id"]), "--json", "--config", str(cfg.path)])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [(lo["reason"], lo["why"]) for lo in shown["left_out"]] == [
        ("event_before_digest", "event before the digest goes out")
    ]


def test_a_period_with_only_an_upcoming_event_is_worth_building(cfg: Config, db: Database) -> None:
    """The service builds the period in progress only when it has something to list: an
    event announced long before counts, one that started before the digest's date does not."""
    in_period = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
    event(db, "gone", published=in_period - 2 * DAY, start=in_period - DAY)
    rep = build_due(cfg, db, now=in_period, exchange_id=RU, which="current")
    assert rep.built == [] and rep.skipped[0]["reason"] == "no items in the period"

    event(db, "ahead", published=in_period - 30 * DAY, start=RU_DIGEST_DATE + 2 * DAY)
    rep = build_due(cfg, db, now=in_period, exchange_id=RU, which="current")
    assert [b.sections for b in rep.built] == [{"news": 0, "events": 1}]


# -- how an event reads ------------------------------------------------------------------------


def test_russian_readers_see_joensuu_events_on_moscow_time_with_helsinki_beside(
    cfg: Config, db: Database, joensuu: dict[str, int]
) -> None:
    rep = build_digest(db, cfg, RU, period_start=OCT1, now=NOW)
    r = render(db, cfg, rep.id)
    assert event_lines(r.text)[0] == (
        f"Добавить в календарь (.ics): {digest_calendar_url(cfg, rep.id)}"
    )
    when = {i["item_id"]: (i["when"], i["where"]) for i in r.items if i["section"] == "events"}
    ids = joensuu
    # Before the switch the clocks agree: no second time.
    assert when[ids["early-announced"]] == ("вторник, 20 октября, 18:00", None)
    # A whole-day festival: its dates where it is held, no time, no zone.
    assert when[ids["festival"]] == ("23–25 октября", "Йоэнсуу, Laulurinne")
    # Across the switch: the end is 06:00 in Moscow (05:00 in Joensuu, after the switch).
    assert when[ids["night"]] == (
        "суббота, 24 октября, 22:00 – воскресенье, 25 октября, 06:00",
        None,
    )
    assert when[ids["concert"]] == (
        "среда, 28 октября, 19:00–21:00 (18:00–20:00 по Хельсинки)",
        "Йоэнсуу, Carelicum",
    )
    assert when[ids["lecture"]] == ("пятница, 30 октября, 15:00 (14:00 по Хельсинки)", "Йоэнсуу")
    assert when[ids["undated"]] == (None, None)
    assert (
        "\n   среда, 28 октября, 19:00–21:00 (18:00–20:00 по Хельсинки) ·\n   Йоэнсуу, Carelicum\n"
    ) in r.text
    assert "\n   23–25 октября · Йоэнсуу, Laulurinne\n" in r.text
    assert f'<a href="{digest_calendar_url(cfg, rep.id)}"' in r.html
    assert "Добавить в календарь (.ics)</a>" in r.html
    # The HTML keeps the parts whole so a phone wraps between them.
    assert ">(18:00–20:00 по Хельсинки)</span>" in r.html
    assert "&nbsp;· <span" in r.html


def test_finnish_readers_see_petrozavodsk_events_on_finnish_time_with_moscow_beside(
    cfg: Config, db: Database
) -> None:
    theatre = event(
        db,
        "theatre",
        source="stolica",
        published=RU_DIGEST_DATE - 3 * DAY,
        start=datetime(2026, 10, 29, 16, 0, tzinfo=UTC),  # 19:00 in Moscow, 18:00 EET
        town="Петрозаводск",
        venue="Национальный театр",
    )
    summer = event(
        db,
        "summer-time",
        source="stolica",
        published=RU_DIGEST_DATE - 3 * DAY,
        start=datetime(2026, 10, 17, 16, 0, tzinfo=UTC),  # 19:00 in both, before the switch
    )
    rep = build_digest(db, cfg, FI, period_start=OCT1, now=NOW)
    r = render(db, cfg, rep.id)
    when = {i["item_id"]: (i["when"], i["where"]) for i in r.items}
    assert when[theatre] == (
        "torstai 29. lokakuuta klo 18.00 (klo 19.00 Moskovan aikaa)",
        "Petroskoi, Национальный театр",
    )
    assert when[summer] == ("lauantai 17. lokakuuta klo 19.00", None)
    assert [i["item_id"] for i in r.items] == [summer, theatre]
    assert "Lisää kalenteriin (.ics)" in r.text and "Lisää kalenteriin (.ics)" in r.html
    # The text part wraps the line between its parts, not inside them.
    assert (
        "\n   torstai 29. lokakuuta klo 18.00 (klo 19.00 Moskovan aikaa) ·\n"
        "   Petroskoi, Национальный театр\n"
    ) in r.text


def test_a_digest_without_events_has_no_calendar_link(cfg: Config, db: Database) -> None:
    add_item(
        db,
        key="only-news",
        source="yle-pk",
        title="Uutinen",
        published=RU_DIGEST_DATE - DAY,
        tr={"ru": "Новость"},
    )
    rep = build_digest(db, cfg, RU, period_start=OCT1, now=NOW)
    r = render(db, cfg, rep.id)
    assert "events.ics" not in r.html + r.text
    assert "Добавить в календарь" not in r.html + r.text


def test_an_unknown_event_zone_falls_back_to_the_region_and_renders(
    cfg: Config, db: Database
) -> None:
    odd = event(
        db,
        "odd-zone",
        published=RU_DIGEST_DATE - DAY,
        start=datetime(2026, 10, 28, 16, 0, tzinfo=UTC),
        zone="Europe/Joensuu",  # a feed's typo
    )
    rep = build_digest(db, cfg, RU, period_start=OCT1, now=NOW)
    items: dict[int, Any] = {i["item_id"]: i for i in render(db, cfg, rep.id).items}
    assert items[odd]["when"] == "среда, 28 октября, 19:00 (18:00 по Хельсинки)"


@pytest.mark.browser
def test_event_lines_wrap_between_their_parts_on_a_phone(
    browser: object,  # noqa: F811
    cfg: Config,
    db: Database,
    joensuu: dict[str, int],
    tmp_path: Path,
) -> None:
    """At 390 px the line "среда, 28 октября, 19:00–21:00 (18:00–20:00 по Хельсинки) ·
    Йоэнсуу, Carelicum" does not fit: it wraps between the date, the other clock and the
    place, never inside one of them, and nothing scrolls sideways."""
    event(
        db,
        "long-venue",
        published=RU_DIGEST_DATE - DAY,
        start=datetime(2026, 10, 29, 16, 0, tzinfo=UTC),
        end=datetime(2026, 10, 29, 18, 0, tzinfo=UTC),
        zone="Europe/Helsinki",
        town="Joensuu",
        venue="Pohjois-Karjalan museo Hilman konferenssisali ja näyttelytilat, toinen kerros",
    )
    rep = build_digest(db, cfg, RU, period_start=OCT1, now=NOW)
    r = render(db, cfg, rep.id)
    page = browser.new_page(viewport={"width": 390, "height": 844})  # type: ignore[attr-defined]
    try:
        page.set_content(r.html)
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], f"horizontal scroll at 390 px: {widths}"
        # Each short part stays on one line (its height is one line's); the lines wrapped.
        parts = page.evaluate(
            "[...document.querySelectorAll('p.when')].map(p => ({lines: Math.round("
            "p.getBoundingClientRect().height / parseFloat(getComputedStyle(p).lineHeight)), "
            "parts: [...p.querySelectorAll('span')].map(s => [s.textContent, "
            "Math.round(s.getBoundingClientRect().height / "
            "parseFloat(getComputedStyle(p).lineHeight))])}))"
        )
        page.screenshot(path=f"{tmp_path}/events-390.png", full_page=True)
    finally:
        page.close()
    concert = next(p for p in parts if p["parts"][0][0].startswith("среда, 28 октября"))
    assert concert["lines"] >= 2  # it did wrap …
    assert [n for _text, n in concert["parts"]] == [1, 1, 1]  # … between the parts
    long_venue = next(p for p in parts if p["parts"][0][0].startswith("четверг, 29 октября"))
    assert long_venue["parts"][0][1] == 1 and long_venue["parts"][2][1] >= 2  # only it wraps


HEL, MSK = ZoneInfo("Europe/Helsinki"), ZoneInfo("Europe/Moscow")
EVENING = datetime(2026, 12, 12, 16, 0, tzinfo=UTC)  # 18:00 in Helsinki, 19:00 in Moscow


@pytest.mark.parametrize(
    ("language", "reader", "kw", "expected"),
    [
        ("en", HEL, {"event_tz": MSK}, "Saturday 12 December, 18:00 (19:00 Moscow time)"),
        (
            "en",
            MSK,
            {"event_tz": HEL, "end": EVENING + 2 * HOUR},
            "Saturday 12 December, 19:00–21:00 (18:00–20:00 Helsinki time)",
        ),
        ("ru", HEL, {"event_tz": HEL}, "суббота, 12 декабря, 18:00"),
        # Late in Joensuu, already tomorrow in Petrozavodsk: the other side's day is named.
        (
            "ru",
            MSK,
            {"event_tz": HEL, "start": datetime(2026, 12, 12, 21, 30, tzinfo=UTC)},
            "воскресенье, 13 декабря, 00:30 (12 декабря, 23:30 по Хельсинки)",
        ),
        (
            "fi",
            HEL,
            {"event_tz": MSK, "end": datetime(2026, 12, 13, 1, 0, tzinfo=UTC)},
            "lauantai 12. joulukuuta klo 18.00 – sunnuntai 13. joulukuuta klo 3.00 "
            "(klo 19.00 Moskovan aikaa)",
        ),
        (
            "fi",
            MSK,
            {
                "event_tz": HEL,
                "start": datetime(2026, 12, 29, 22, 0, tzinfo=UTC),
                "end": datetime(2027, 1, 1, 22, 0, tzinfo=UTC),
                "all_day": True,
            },
            "30. joulukuuta 2026 – 1. tammikuuta 2027",
        ),
        (
            "en",
            MSK,
            {
                "event_tz": HEL,
                "start": datetime(2026, 11, 29, 22, 0, tzinfo=UTC),
                "end": datetime(2026, 12, 2, 22, 0, tzinfo=UTC),
                "all_day": True,
            },
            "30 November – 2 December",
        ),
        # A listing that gave only a date (local midnight, no end): the date alone.
        (
            "ru",
            MSK,
            {"event_tz": HEL, "start": datetime(2026, 12, 11, 22, 0, tzinfo=UTC)},
            "суббота, 12 декабря",
        ),
        (
            "ru",
            MSK,
            {"event_tz": ZoneInfo("Europe/Stockholm")},
            "суббота, 12 декабря, 19:00 (17:00, время: Стокгольм)",
        ),
    ],
)
def test_an_event_reads_naturally_in_each_language(
    language: str, reader: ZoneInfo, kw: dict[str, Any], expected: str
) -> None:
    start = kw.pop("start", EVENING)
    assert format_event(start, language, reader, **kw) == expected
