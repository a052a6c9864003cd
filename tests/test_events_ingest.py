"""Events in: ``kind: ical`` calendars, schema.org events on selector-less ``kind: html``
pages, and ``event_date``/``event_end``/``place`` selectors, each served from a loopback
server, fetched with ``run_fetch`` and checked in the stored items.

Every date is relative to the injected ``NOW`` (the window is ``NOW − 1 day`` to
``NOW + fetch.event_window_days``), so the suite reads the same a year ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest
from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Database, Item
from newsexchange.db.queries.digests import period_items
from newsexchange.ingest import FetchReport, run_fetch
from newsexchange.ingest.ical import MAX_OCCURRENCES, parse_calendar
from newsexchange.ingest.structured import NO_EVENTS
from tests.conftest import BASE_CONFIG
from tests.servers import HTTPServer, Response, allow_private

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday
HEL = ZoneInfo("Europe/Helsinki")
MSK = ZoneInfo("Europe/Moscow")
DATA = Path(__file__).parent / "data" / "events"
MUNICIPAL = (DATA / "municipal.ics").read_bytes()
UID = "satutunti-2026@tapahtumat.joensuu.example"
ICS = {"Content-Type": "text/calendar; charset=utf-8"}
HTML = {"Content-Type": "text/html; charset=utf-8"}

REGIONS = BASE_CONFIG.replace(
    "timezone: Europe/Helsinki}\n",
    "timezone: Europe/Helsinki, places: [Joensuu, Kontiolahti, Liperi]}\n",
).replace(
    "timezone: Europe/Moscow}\n",
    "timezone: Europe/Moscow, places: [Петрозаводск, Petrozavodsk, Кондопога]}\n",
)


@pytest.fixture
def setup(
    write_config: Callable[..., Config], http_server: HTTPServer, tmp_path: Path
) -> Iterator[Callable[..., tuple[Config, Database]]]:
    opened: list[Database] = []

    def make(
        sources: str, *, db_url: str | None = None, window: int = 90, db_name: str = "events.db"
    ) -> tuple[Config, Database]:
        fetch = (
            "fetch: {connect_timeout: 1, read_timeout: 1, total_timeout: 4, retries: 1, "
            f"interval_minutes: 30, event_window_days: {window}, {allow_private(http_server)}}}\n"
        )
        cfg = write_config(fetch + "sources:\n" + sources, base=REGIONS)
        db = Database(db_url or f"sqlite:///{tmp_path}/{db_name}")
        opened.append(db)
        return cfg, db

    yield make
    for d in opened:
        d.dispose()


def source(sid: str, url: str, extra: str = "", *, region: str = "joensuu") -> str:
    lang = "fi" if region == "joensuu" else "ru"
    return f'  - {{id: {sid}, region: {region}, language: {lang}, url: "{url}"{extra}}}\n'


def items(db: Database, sid: str) -> list[Item]:
    with db.session() as s:
        rows = s.scalars(select(Item).where(Item.source_id == sid).order_by(Item.event_start))
        return list(rows)


def outcome(report: FetchReport, sid: str) -> dict[str, object]:
    return next(r for r in report.to_json()["results"] if r["source"] == sid)


def local(dt: datetime | None, tz: ZoneInfo) -> datetime:
    assert dt is not None
    return dt.astimezone(tz).replace(tzinfo=None)


def at(day: date, hh: int, mm: int, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=tz).astimezone(UTC)


# -- kind: ical ---------------------------------------------------------------------------


def test_calendar_occurrences_become_events_with_utc_times_zones_and_places(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer, any_db_url: str
) -> None:
    http_server.route("/events.ics", Response(200, MUNICIPAL, ICS))
    cfg, db = setup(
        source("cal", f"{http_server.url}/events.ics", ", kind: ical"), db_url=any_db_url
    )
    report = run_fetch(db, cfg, now=NOW)
    out = outcome(report, "cal")
    assert out["status"] == "ok" and out["parser"] == "ical"
    assert "1 broken event" in str(out["problem"])  # the VEVENT with DTSTART "joskus …"
    accept = http_server.requests_to("/events.ics")[0].header("Accept") or ""
    assert accept.startswith("text/calendar")

    stored = items(db, "cal")
    assert all(i.category == "events" for i in stored)  # a calendar's default category
    by_title: dict[str, list[Item]] = {}
    for i in stored:
        by_title.setdefault(i.title, []).append(i)

    # The weekly story hour: every Wednesday 18:00 Helsinki time in the window, without the
    # EXDATE (23 Dec) and the cancelled override (9 Dec), with 2 Dec moved to Thu 3 Dec 17:00.
    window_end = NOW + timedelta(days=90)
    wednesdays = []
    day = date(2026, 11, 4)
    while at(day, 18, 0, HEL) <= window_end:
        if at(day, 18, 0, HEL) >= NOW - timedelta(days=1):
            wednesdays.append(day)
        day += timedelta(days=7)
    weekly = [
        d for d in wednesdays if d not in (date(2026, 12, 2), date(2026, 12, 9), date(2026, 12, 23))
    ]
    regular = by_title["Satutunti kirjastossa"]
    assert [local(i.event_start, HEL) for i in regular] == [
        datetime.combine(d, time(18, 0)) for d in weekly
    ]
    assert all(i.event_end - i.event_start == timedelta(hours=1) for i in regular)  # type: ignore[operator]
    assert {i.event_timezone for i in regular} == {"Europe/Helsinki"}
    assert {(i.place_venue, i.place_town) for i in regular} == {("Joensuun pääkirjasto", "Joensuu")}
    assert {i.guid for i in regular} == {
        f"{UID}/{at(d, 18, 0, HEL).strftime('%Y%m%dT%H%M%SZ')}" for d in weekly
    }
    assert regular[0].link == "https://tapahtumat.joensuu.example/satutunti"  # utm_ stripped
    assert regular[0].summary_text == "Lasten satutunti joka keskiviikko. Vapaa pääsy."
    (moved,) = by_title["Satutunti kirjastossa (torstaina)"]
    assert moved.event_start == at(date(2026, 12, 3), 17, 0, HEL)
    assert moved.guid == f"{UID}/{at(date(2026, 12, 2), 18, 0, HEL).strftime('%Y%m%dT%H%M%SZ')}"
    assert (moved.place_venue, moved.place_town) == ("Rantakylän kirjasto", "Joensuu")

    (market,) = by_title["Joulumarkkinat"]  # DTSTART;VALUE=DATE 4 Dec, DTEND 7 Dec (exclusive)
    assert market.all_day and market.event_timezone is None
    assert (market.event_start, market.event_end) == (
        at(date(2026, 12, 4), 0, 0, HEL),
        at(date(2026, 12, 7), 0, 0, HEL),
    )
    assert "<script" not in market.summary_html and "<b>joulumarkkinat</b>" in market.summary_html
    (gala,) = by_title["Itsenäisyyspäivän juhla"]  # all-day without DTEND: one day
    assert gala.event_end - gala.event_start == timedelta(days=1)  # type: ignore[operator]
    assert (gala.place_venue, gala.place_town) == ("Carelicum", None)

    (concert,) = by_title["Karjalan filharmonian vierailukonsertti"]
    assert concert.event_timezone == "Europe/Moscow"
    assert concert.event_start == at(date(2026, 12, 12), 19, 0, MSK)
    # A town is one of the source region's places; Petrozavodsk is not Joensuu's, so the
    # whole LOCATION is the venue.
    assert (concert.place_venue, concert.place_town) == (
        "Карельская филармония, Петрозаводск",
        None,
    )
    (webinar,) = by_title["Rajayhteistyön webinaari"]  # …Z: UTC, no zone of its own
    assert webinar.event_start == datetime(2026, 12, 15, 12, 0, tzinfo=UTC)
    assert webinar.event_timezone is None
    (night,) = by_title["Kirjaston yö"]  # floating 17:00: the region's local time
    assert night.event_start == at(date(2026, 12, 18), 17, 0, HEL) and night.event_timezone is None
    (choir,) = by_title["Kuorokonsertti"]  # TZID=FLE Standard Time (Windows): Helsinki's clock
    assert choir.event_start == at(date(2026, 12, 19), 15, 0, HEL)
    assert choir.event_timezone == "Europe/Helsinki"
    (walk,) = by_title["Talvipäivänseisauksen kävely"]  # an unknown TZID: its VTIMEZONE's +02:00
    assert walk.event_start == datetime(2026, 12, 20, 10, 0, tzinfo=UTC)
    assert walk.event_timezone is None and walk.event_end is None  # no DTEND: an instant

    titles = set(by_title)
    assert "Peruttu luento" not in titles  # STATUS:CANCELLED
    assert "Rikkinäinen tapahtuma" not in titles  # broken DTSTART
    assert "Viime vuoden tapahtuma" not in titles and "Kesän tapahtuma" not in titles  # window
    assert all(i.event_start is not None for i in stored)
    assert len(stored) == len(regular) + 8


def test_unchanged_calendar_stores_nothing_and_a_moved_occurrence_is_updated_in_place(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer, any_db_url: str
) -> None:
    http_server.route("/events.ics", Response(200, MUNICIPAL, ICS))
    cfg, db = setup(
        source("cal", f"{http_server.url}/events.ics", ", kind: ical"), db_url=any_db_url
    )
    first = run_fetch(db, cfg, now=NOW)
    before = {(i.id, i.guid, i.content_hash, i.updated_at) for i in items(db, "cal")}
    again = run_fetch(db, cfg, now=NOW + timedelta(hours=1))
    assert (again.ok, again.new_items, again.updated_items) == (1, 0, 0)
    assert {(i.id, i.guid, i.content_hash, i.updated_at) for i in items(db, "cal")} == before

    # The library moves 16 Dec to Thursday 17 Dec; the concert moves to another hall.
    rid = at(date(2026, 12, 16), 18, 0, HEL).strftime("%Y%m%dT%H%M%SZ")
    guid = f"{UID}/{rid}"
    old = next(i for i in items(db, "cal") if i.guid == guid)
    override = (
        "BEGIN:VEVENT\r\nUID:" + UID + "\r\nDTSTAMP:20261124T090000Z\r\n"
        "RECURRENCE-ID;TZID=Europe/Helsinki:20261216T180000\r\n"
        "DTSTART;TZID=Europe/Helsinki:20261217T180000\r\n"
        "DTEND;TZID=Europe/Helsinki:20261217T190000\r\n"
        "SUMMARY:Satutunti kirjastossa\r\n"
        "DESCRIPTION:Lasten satutunti joka keskiviikko.\\nVapaa pääsy.\r\n"
        "LOCATION:Joensuun pääkirjasto\\, Koskikatu 25\\, 80100 Joensuu\r\n"
        "URL:https://tapahtumat.joensuu.example/satutunti\r\nEND:VEVENT\r\n"
    )
    changed = (
        MUNICIPAL.decode()
        .replace("Карельская филармония\\, Петрозаводск", "Концертный зал\\, Петрозаводск")
        .replace("END:VCALENDAR", override + "END:VCALENDAR")
    )
    http_server.route("/events.ics", Response(200, changed.encode(), ICS))
    later = NOW + timedelta(hours=2)
    third = run_fetch(db, cfg, now=later)
    assert (third.new_items, third.updated_items) == (0, 2)
    moved = next(i for i in items(db, "cal") if i.guid == guid)
    assert moved.id == old.id and moved.updated_at == later
    assert moved.event_start == at(date(2026, 12, 17), 18, 0, HEL)
    concert = next(i for i in items(db, "cal") if i.title.startswith("Karjalan filharmonian"))
    assert concert.place_venue == "Концертный зал, Петрозаводск"
    assert len(items(db, "cal")) == first.new_items


def _weekly_and_one(now: datetime, *, cancel_second: bool = False, drop_gala: bool = False) -> bytes:
    """A small calendar relative to ``now``: a weekly class (its second occurrence cancelled
    by an override when ``cancel_second``) and a one-off gala (left out when ``drop_gala``)."""
    cal = icalendar.Calendar()
    cal.add("prodid", "-//test//cancellations//FI")
    cal.add("version", "2.0")
    first = datetime.combine((now + timedelta(days=2)).date(), time(15, 0), tzinfo=UTC)
    weekly = icalendar.Event()
    weekly.add("uid", "tanssi@cal.example")
    weekly.add("dtstamp", now)
    weekly.add("dtstart", first)
    weekly.add("dtend", first + timedelta(hours=1))
    weekly.add("rrule", {"freq": "weekly", "count": 4})
    weekly.add("summary", "Tanssikurssi")
    weekly.add("location", "Kulttuuritalo, Joensuu")
    cal.add_component(weekly)
    if cancel_second:
        off = icalendar.Event()
        off.add("uid", "tanssi@cal.example")
        off.add("dtstamp", now)
        off.add("recurrence-id", first + timedelta(days=7))
        off.add("dtstart", first + timedelta(days=7))
        off.add("dtend", first + timedelta(days=7, hours=1))
        off.add("summary", "Tanssikurssi")
        off.add("status", "CANCELLED")
        cal.add_component(off)
    if not drop_gala:
        gala = icalendar.Event()
        gala.add("uid", "gaala@cal.example")
        gala.add("dtstamp", now)
        gala.add("dtstart", first + timedelta(days=10, hours=3))
        gala.add("summary", "Itsenäisyyspäivän gaala")
        cal.add_component(gala)
    return bytes(cal.to_ical())


def test_an_occurrence_the_calendar_cancels_or_drops_is_no_candidate_until_it_returns(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer, any_db_url: str
) -> None:
    http_server.route("/c.ics", Response(200, _weekly_and_one(NOW), ICS))
    cfg, db = setup(source("c", f"{http_server.url}/c.ics", ", kind: ical"), db_url=any_db_url)
    assert run_fetch(db, cfg, now=NOW).new_items == 5
    assert [i.cancelled_at for i in items(db, "c")] == [None] * 5

    # The second class is cancelled (an override with STATUS:CANCELLED); the gala is deleted.
    http_server.route(
        "/c.ics", Response(200, _weekly_and_one(NOW, cancel_second=True, drop_gala=True), ICS)
    )
    later = NOW + timedelta(hours=1)
    report = run_fetch(db, cfg, now=later)
    assert outcome(report, "c")["cancelled"] == 2
    stored = items(db, "c")
    gone = {i.title for i in stored if i.cancelled_at == later}
    assert gone == {"Tanssikurssi", "Itsenäisyyspäivän gaala"}
    assert sum(1 for i in stored if i.cancelled_at is not None) == 2

    # Neither is a digest's candidate any more; the other three classes are.
    with db.session() as s:
        listed = period_items(
            s, ["joensuu"], NOW - timedelta(days=14), NOW + timedelta(days=1),
            events_until=NOW + timedelta(days=40),
        )
        assert len(listed) == 3 and all(i.cancelled_at is None for i in listed)

    # The calendar takes it back: the gala returns, uncancelled (same item).
    http_server.route("/c.ics", Response(200, _weekly_and_one(NOW, cancel_second=True), ICS))
    report = run_fetch(db, cfg, now=NOW + timedelta(hours=2))
    assert "cancelled" not in outcome(report, "c")
    gala = next(i for i in items(db, "c") if i.title.startswith("Itsenäisyys"))
    assert gala.cancelled_at is None
    assert len(items(db, "c")) == 5


def test_a_calendar_read_in_part_cancels_nothing(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    """A broken event might be one of the stored ones: a partial reading vouches for no
    absence."""
    http_server.route("/c.ics", Response(200, _weekly_and_one(NOW), ICS))
    cfg, db = setup(source("c", f"{http_server.url}/c.ics", ", kind: ical"))
    run_fetch(db, cfg, now=NOW)
    broken = _weekly_and_one(NOW, drop_gala=True).replace(
        b"END:VCALENDAR", b"BEGIN:VEVENT\r\nUID:x@y\r\nDTSTART:joskus\r\nEND:VEVENT\r\nEND:VCALENDAR"
    )
    http_server.route("/c.ics", Response(200, broken, ICS))
    report = run_fetch(db, cfg, now=NOW + timedelta(hours=1))
    assert "broken event" in str(outcome(report, "c")["problem"])
    assert all(i.cancelled_at is None for i in items(db, "c"))


def _google_export(now: datetime) -> bytes:
    """A Google Calendar export: UTC times, the calendar's zone in X-WR-TIMEZONE, an RRULE
    without an end, and CRLF lines folded at 75 octets."""
    cal = icalendar.Calendar()
    cal.add("prodid", "-//Google Inc//Google Calendar 70.9054//EN")
    cal.add("version", "2.0")
    cal.add("x-wr-calname", "Карелия: афиша")
    cal.add("x-wr-timezone", "Europe/Moscow")
    first = datetime.combine((now + timedelta(days=3)).date(), time(16, 0), tzinfo=UTC)
    ev = icalendar.Event()
    ev.add("uid", "abc123@google.com")
    ev.add("dtstamp", now)
    ev.add("dtstart", first)
    ev.add("dtend", first + timedelta(hours=2))
    ev.add("rrule", {"freq": "daily"})
    ev.add("summary", "Выставка «Калевала» " + "очень длинное название " * 4)
    ev.add("location", "Музей изобразительных искусств, пр. Карла Маркса 8, Петрозаводск")
    cal.add_component(ev)
    return cal.to_ical()


def test_google_export_reads_x_wr_timezone_and_an_endless_rrule_is_bounded_by_the_window(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    http_server.route("/basic.ics", Response(200, _google_export(NOW), ICS))
    cfg, db = setup(
        source("g", f"{http_server.url}/basic.ics", ", kind: ical", region="petrozavodsk")
    )
    report = run_fetch(db, cfg, now=NOW)
    assert outcome(report, "g")["status"] == "ok"
    stored = items(db, "g")
    first = datetime.combine((NOW + timedelta(days=3)).date(), time(16, 0), tzinfo=UTC)
    expected = [
        first + timedelta(days=n)
        for n in range(91)
        if first + timedelta(days=n) <= NOW + timedelta(days=90)
    ]
    assert [i.event_start for i in stored] == expected
    assert {i.event_timezone for i in stored} == {"Europe/Moscow"}
    assert {(i.place_venue, i.place_town) for i in stored} == {
        ("Музей изобразительных искусств", "Петрозаводск")
    }
    assert stored[0].title.startswith("Выставка «Калевала»")  # unfolded, whole


def test_a_minutely_rule_is_capped_with_a_problem_note() -> None:
    start = NOW.strftime("%Y%m%dT%H%M%SZ")
    body = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//y//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:tick@x\r\nDTSTAMP:{start}\r\nDTSTART:{start}\r\nRRULE:FREQ=MINUTELY\r\n"
        "SUMMARY:Tick\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()
    feed = parse_calendar(body, url="http://127.0.0.1/t.ics", timezone="Europe/Helsinki", now=NOW)
    assert len(feed.entries) == MAX_OCCURRENCES
    assert feed.entries[-1].event_start == NOW + timedelta(minutes=MAX_OCCURRENCES - 1)
    assert f"more than {MAX_OCCURRENCES} occurrences" in (feed.problem or "")
    assert len({e.guid for e in feed.entries}) == MAX_OCCURRENCES


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty response body where an iCalendar"),
        (MUNICIPAL[: len(MUNICIPAL) // 2], "ends before END:VCALENDAR"),
        (b"<!doctype html><html><body>Kalenteri</body></html>", "not an iCalendar file"),
        (
            b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:x\r\n",
            "not a readable iCalendar",
        ),
    ],
)
def test_a_body_that_is_not_a_calendar_is_a_clear_error_and_other_sources_are_unharmed(
    setup: Callable[..., tuple[Config, Database]],
    http_server: HTTPServer,
    body: bytes,
    message: str,
) -> None:
    http_server.route("/bad.ics", Response(200, body, ICS))
    http_server.route("/good.ics", Response(200, MUNICIPAL, ICS))
    cfg, db = setup(
        source("bad", f"{http_server.url}/bad.ics", ", kind: ical")
        + source("good", f"{http_server.url}/good.ics", ", kind: ical")
    )
    report = run_fetch(db, cfg, now=NOW)
    bad = outcome(report, "bad")
    assert bad["status"] == "failed" and message in str(bad["error"])
    assert outcome(report, "good")["status"] == "ok" and items(db, "good")
    assert items(db, "bad") == []


def test_parse_workers_read_calendars_with_the_configured_window_and_places(
    setup: Callable[..., tuple[Config, Database]],
    http_server: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import newsexchange.ingest.pipeline as pipeline

    http_server.route("/events.ics", Response(200, MUNICIPAL, ICS))
    http_server.route("/kirjasto", Response(200, microdata_page(), HTML))
    sources = source("cal", f"{http_server.url}/events.ics", ", kind: ical") + source(
        "kirjasto", f"{http_server.url}/kirjasto", ", kind: html"
    )

    def stored(db_name: str, workers: int) -> list[tuple[object, ...]]:
        cfg, db = setup(sources, window=30, db_name=db_name)
        fetch = cfg.fetch.model_copy(update={"parse_workers": workers})
        report = run_fetch(db, cfg.model_copy(update={"fetch": fetch}), now=NOW)
        assert report.failed == 0
        return [
            (i.source_id, i.guid, i.event_start, i.event_end, i.place_venue, i.place_town)
            for sid in ("cal", "kirjasto")
            for i in items(db, sid)
        ]

    in_process = stored("a.db", 0)
    monkeypatch.setattr(pipeline, "POOL_MIN_SOURCES", 1)
    with_workers = stored("b.db", 1)
    assert with_workers == in_process
    cal = [r for r in in_process if r[0] == "cal"]
    assert cal and all(r[2] <= NOW + timedelta(days=30) for r in cal)  # type: ignore[operator]
    assert max(r[2] for r in cal) > NOW + timedelta(days=20)  # type: ignore[type-var]
    assert ("Joensuun pääkirjasto", "Joensuu") in {(r[4], r[5]) for r in cal}


def _calendar(*events: str) -> bytes:
    body = "".join(f"BEGIN:VEVENT\r\n{e}END:VEVENT\r\n" for e in events)
    return (
        f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n{body}END:VCALENDAR\r\n".encode()
    )


def _stamp(days: int, hour: int = 10) -> str:
    return (NOW + timedelta(days=days)).strftime(f"%Y%m%dT{hour:02d}0000Z")


GOOD = f"UID:good\r\nDTSTART:{_stamp(3)}\r\nSUMMARY:Hyvä\r\n"


@pytest.mark.parametrize(
    "broken",
    [
        f"UID:b\r\nDTSTART:{_stamp(4)}\r\nthis line has no colon\r\nSUMMARY:b\r\n",
        f"UID:b\r\nDTSTART:{_stamp(4)}\r\nRRULE:FREQ=SOMETIMES\r\nSUMMARY:b\r\n",
        f"UID:b\r\nDTSTART:{_stamp(4)}\r\nRRULE:FREQ=DAILY;COUNT=3\r\nEXDATE:soon\r\nSUMMARY:b\r\n",
        f"UID:b\r\nDTSTART:{_stamp(4)}\r\n",  # neither SUMMARY nor DESCRIPTION
        f"UID:b\r\nDTSTART:{_stamp(4)}\r\nRRULE:FREQ=DAILY\r\n",  # …every day: one event
        "UID:b\r\nSUMMARY:no start\r\n",
    ],
)
def test_a_broken_event_is_skipped_and_counted_the_rest_of_the_calendar_counts(
    broken: str,
) -> None:
    feed = parse_calendar(_calendar(GOOD, broken), url="http://127.0.0.1/c.ics", now=NOW)
    assert [e.title for e in feed.entries] == ["Hyvä"]
    assert feed.problem == "1 broken event(s) (VEVENT) skipped"


def test_an_unknown_x_wr_timezone_is_ignored_with_a_note() -> None:
    ev = f"UID:z\r\nDTSTART:{_stamp(4)}\r\nSUMMARY:Zone\r\n"
    body = _calendar(ev).replace(b"VERSION:2.0", b"VERSION:2.0\r\nX-WR-TIMEZONE:Mars/Olympus")
    feed = parse_calendar(body, url="http://127.0.0.1/c.ics", now=NOW)
    assert [e.event_start for e in feed.entries] == [NOW + timedelta(days=4)]
    assert "X-WR-TIMEZONE 'Mars/Olympus'" in (feed.problem or "")


def test_an_end_before_the_start_is_dropped_and_the_event_kept() -> None:
    typo = f"UID:t\r\nDTSTART:{_stamp(4, 18)}\r\nDTEND:{_stamp(4, 8)}\r\nSUMMARY:Typo\r\n"
    (entry,) = parse_calendar(_calendar(typo), url="http://127.0.0.1/c.ics", now=NOW).entries
    assert entry.event_start == NOW + timedelta(days=4, hours=8) and entry.event_end is None


def test_an_undeclared_windows_1251_calendar_is_read_and_noted() -> None:
    ev = f"UID:c\r\nDTSTART:{_stamp(4)}\r\nSUMMARY:Концерт в филармонии сегодня вечером\r\n"
    body = _calendar(ev).decode().encode("cp1251")
    feed = parse_calendar(body, url="http://127.0.0.1/c.ics", now=NOW)
    assert [e.title for e in feed.entries] == ["Концерт в филармонии сегодня вечером"]
    assert "cp1251" in (feed.problem or "")


# -- schema.org events on pages -------------------------------------------------------------


def _day(n: int) -> str:
    return (NOW + timedelta(days=n)).date().isoformat()


def graph_page(context: str = "https://schema.org") -> str:
    """A theatre's page: an @graph with the site, the page and two events of subtypes, one
    cancelled, one without a zone, one whole-day festival with a PostalAddress."""
    return f"""<!doctype html><html lang="ru"><head><title>Афиша театра</title>
<script type="application/ld+json">
{{"@context": "{context}", "@graph": [
  {{"@type": "WebSite", "name": "Театр"}},
  {{"@type": "WebPage", "name": "Афиша"}},
  {{"@type": "TheaterEvent", "name": "Калевала", "url": "/afisha/kalevala?utm_source=x",
    "startDate": "{_day(10)}T19:00", "endDate": "{_day(10)}T21:30",
    "description": "Спектакль по мотивам <b>эпоса</b>.<script>alert(1)<\\/script>",
    "image": {{"@type": "ImageObject", "url": "/img/kalevala.jpg"}},
    "eventStatus": "https://schema.org/EventScheduled",
    "location": {{"@type": "Place", "name": "Национальный театр Карелии",
      "address": {{"@type": "PostalAddress", "streetAddress": "пл. Кирова 3",
                   "addressLocality": "Петрозаводск"}}}}}},
  {{"@type": "MusicEvent", "name": "Отменённый концерт", "startDate": "{_day(12)}T19:00+03:00",
    "eventStatus": "https://schema.org/EventCancelled"}},
  {{"@type": ["Festival"], "name": "Гиперборея", "startDate": "{_day(20)}",
    "endDate": "{_day(22)}", "location": "Онежская набережная, Петрозаводск"}}
]}}
</script>
<script type="application/ld+json">{{ "@type": "Event", "name": "broken", }}</script>
</head><body><h1>Афиша</h1></body></html>"""


def item_list_page() -> str:
    return f"""<html lang="fi"><head><title>Tapahtumat</title>
<script type="application/ld+json">
[{{"@context": "https://schema.org", "@type": "ItemList", "itemListElement": [
  {{"@type": "ListItem", "position": 1, "item": {{"@type": "Event", "name": "Joulukonsertti",
    "startDate": "{_day(5)}T18:00:00+02:00", "url": "https://tapahtumat.example/joulukonsertti",
    "location": {{"@type": "Place", "name": "Carelia-sali, Joensuu"}}}}}},
  {{"@type": "ListItem", "position": 2, "item": {{"@type": "SportsEvent", "name": "Jääkiekko",
    "startDate": "{_day(6)}T17:00:00+02:00", "url": "https://tapahtumat.example/jokipojat",
    "location": {{"@type": "VirtualLocation", "url": "https://stream.example"}}}}}}
]}}]
</script></head><body></body></html>"""


def microdata_page() -> str:
    return f"""<html lang="fi"><head><title>Kirjasto</title></head><body>
<div itemscope itemtype="https://schema.org/LiteraryEvent">
  <h2 itemprop="name">Kirjailijavierailu</h2>
  <a itemprop="url" href="/tapahtumat/vierailu">Lue lisää</a>
  <time itemprop="startDate" datetime="{_day(8)}T17:30">klo 17.30</time>
  <time itemprop="endDate" datetime="{_day(8)}T19:00">19.00</time>
  <p itemprop="description">Kirjailija kertoo uudesta romaanistaan.</p>
  <div itemprop="location" itemscope itemtype="https://schema.org/Place">
    <span itemprop="name">Joensuun pääkirjasto</span>
    <div itemprop="address" itemscope itemtype="https://schema.org/PostalAddress">
      <span itemprop="streetAddress">Koskikatu 25</span>, <span itemprop="addressLocality">Joensuu</span>
    </div>
  </div>
</div></body></html>"""


def test_pages_with_json_ld_and_microdata_events_need_no_selectors(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    # A @context that is an address: resolving it would be a request the page chose.
    http_server.route("/teatr", Response(200, graph_page(f"{http_server.url}/context"), HTML))
    http_server.route("/lista", Response(200, item_list_page(), HTML))
    http_server.route("/kirjasto", Response(200, microdata_page(), HTML))
    cfg, db = setup(
        source(
            "teatr",
            f"{http_server.url}/teatr",
            ", kind: html, category: events",
            region="petrozavodsk",
        )
        + source("lista", f"{http_server.url}/lista", ", kind: html, category: events")
        + source("kirjasto", f"{http_server.url}/kirjasto", ", kind: html, category: events")
    )
    report = run_fetch(db, cfg, now=NOW)
    assert report.failed == 0
    assert {outcome(report, s)["parser"] for s in ("teatr", "lista", "kirjasto")} == {"schema.org"}
    assert "1 JSON-LD block" in str(outcome(report, "teatr")["problem"])

    play, festival = items(db, "teatr")  # the cancelled concert is not an event
    assert play.title == "Калевала"
    assert play.link == f"{http_server.url}/afisha/kalevala"
    assert play.event_start == at(NOW.date() + timedelta(days=10), 19, 0, MSK)
    assert play.event_end == at(NOW.date() + timedelta(days=10), 21, 30, MSK)
    assert (play.place_venue, play.place_town) == ("Национальный театр Карелии", "Петрозаводск")
    assert play.image_url == f"{http_server.url}/img/kalevala.jpg"
    assert "<b>эпоса</b>" in play.summary_html and "<script" not in play.summary_html
    assert festival.all_day and festival.event_timezone is None
    assert festival.event_start == at(NOW.date() + timedelta(days=20), 0, 0, MSK)
    # endDate is the last day; the stored end is the midnight after it.
    assert festival.event_end == at(NOW.date() + timedelta(days=23), 0, 0, MSK)
    assert (festival.place_venue, festival.place_town) == ("Онежская набережная", "Петрозаводск")

    concert, hockey = items(db, "lista")
    assert concert.event_start == datetime.combine(
        NOW.date() + timedelta(days=5), time(16, 0), tzinfo=UTC
    )
    assert (concert.place_venue, concert.place_town) == ("Carelia-sali", "Joensuu")
    assert hockey.title == "Jääkiekko" and (hockey.place_venue, hockey.place_town) == (None, None)

    (visit,) = items(db, "kirjasto")
    assert visit.link == f"{http_server.url}/tapahtumat/vierailu"
    assert visit.event_start == at(NOW.date() + timedelta(days=8), 17, 30, HEL)
    assert visit.event_end == at(NOW.date() + timedelta(days=8), 19, 0, HEL)
    assert (visit.place_venue, visit.place_town) == ("Joensuun pääkirjasto", "Joensuu")
    assert visit.summary_text == "Kirjailija kertoo uudesta romaanistaan."

    again = run_fetch(db, cfg, now=NOW + timedelta(hours=1))
    assert (again.new_items, again.updated_items) == (0, 0)
    assert http_server.requests_to("/context") == []  # extruct fetched nothing


def test_performances_sharing_one_page_are_separate_events(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    shows = (
        ",".join(
            f'{{"@type": "TheaterEvent", "name": "Калевала", "url": "/afisha/kalevala", '
            f'"startDate": "{_day(n)}T19:00"}}'
            for n in (10, 11, 12)
        )
        + f',{{"@type": "MusicEvent", "name": "Концерт", "url": "/afisha/koncert", "startDate": "{_day(5)}T18:00"}}'
    )
    page = f'<html><head><script type="application/ld+json">[{shows}]</script></head></html>'
    http_server.route("/afisha", Response(200, page, HTML))
    cfg, db = setup(
        source("teatr", f"{http_server.url}/afisha", ", kind: html", region="petrozavodsk")
    )
    report = run_fetch(db, cfg, now=NOW)
    assert report.new_items == 4
    stored = items(db, "teatr")
    play = [i for i in stored if i.title == "Калевала"]
    assert [i.event_start for i in play] == [
        at(NOW.date() + timedelta(days=n), 19, 0, MSK) for n in (10, 11, 12)
    ]
    assert len({i.guid for i in play}) == 3
    (concert,) = [i for i in stored if i.title == "Концерт"]
    assert concert.guid == f"{http_server.url}/afisha/koncert"  # alone: its address, unchanged


def test_a_selector_less_page_without_events_is_a_clear_error_and_others_are_unharmed(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    plain = "<html><head><title>Uutiset</title></head><body><article><h2>Juttu</h2></article></body></html>"
    http_server.route("/plain", Response(200, plain, HTML))
    http_server.route("/kirjasto", Response(200, microdata_page(), HTML))
    cfg, db = setup(
        source("plain", f"{http_server.url}/plain", ", kind: html")
        + source("kirjasto", f"{http_server.url}/kirjasto", ", kind: html")
    )
    report = run_fetch(db, cfg, now=NOW)
    bad = outcome(report, "plain")
    assert bad["status"] == "failed" and NO_EVENTS in str(bad["error"])
    assert outcome(report, "kirjasto")["status"] == "ok" and len(items(db, "kirjasto")) == 1


# -- selectors: event_date, event_end, place --------------------------------------------------


def listing_page() -> str:
    d1, d2, d3 = (NOW.date() + timedelta(days=n) for n in (4, 9, 15))
    fi = "{d.day}.{d.month}.{d.year}".format
    return f"""<html lang="fi"><body>
<script type="application/ld+json">{{"@type": "Event", "name": "Ei käytetä", "startDate": "{d1}"}}</script>
<article class="tapahtuma"><h3>Joulukonsertti</h3><a href="/t/1">Lisää</a>
  <span class="aika">{fi(d=d1)} klo 19.00–21.00</span><span class="paikka">Carelicum, Koskikatu 5, Joensuu</span></article>
<article class="tapahtuma"><h3>Yökino</h3><a href="/t/2">Lisää</a>
  <span class="aika">{fi(d=d2)} klo 22</span><span class="loppu">klo 02.00</span><span class="paikka">Kino Kerubi</span></article>
<article class="tapahtuma"><h3>Talvinäyttely</h3><a href="/t/3">Lisää</a>
  <span class="aika">{fi(d=d3)}</span><span class="loppu">{fi(d=d3 + timedelta(days=6))}</span>
  <span class="paikka">Taidemuseo Onni, Kirkkokatu 23, 80100 Joensuu</span></article>
</body></html>"""


def test_selectors_read_event_start_end_and_place_and_win_over_structured_data(
    setup: Callable[..., tuple[Config, Database]], http_server: HTTPServer
) -> None:
    http_server.route("/tapahtumat", Response(200, listing_page(), HTML))
    select_ = (
        ', kind: html, category: events, select: {item: "article.tapahtuma", title: "h3", '
        'event_date: "span.aika", event_end: "span.loppu", place: "span.paikka"}'
    )
    cfg, db = setup(source("lista", f"{http_server.url}/tapahtumat", select_))
    report = run_fetch(db, cfg, now=NOW)
    assert outcome(report, "lista")["parser"] == "html"
    concert, cinema, show = items(db, "lista")  # not "Ei käytetä": the selectors win
    d1, d2, d3 = (NOW.date() + timedelta(days=n) for n in (4, 9, 15))
    assert (concert.event_start, concert.event_end) == (at(d1, 19, 0, HEL), at(d1, 21, 0, HEL))
    assert (concert.place_venue, concert.place_town) == ("Carelicum", "Joensuu")
    assert cinema.event_start == at(d2, 22, 0, HEL)
    assert cinema.event_end == at(d2 + timedelta(days=1), 2, 0, HEL)  # past midnight
    assert (cinema.place_venue, cinema.place_town) == ("Kino Kerubi", None)
    assert show.event_start == at(d3, 0, 0, HEL)
    assert show.event_end == at(d3 + timedelta(days=7), 0, 0, HEL)  # the whole last day
    assert (show.place_venue, show.place_town) == ("Taidemuseo Onni", "Joensuu")
