"""The events of a digest as iCalendar: the ``events.ics`` attached to the mail (through real
SMTP on loopback, the outbox and a loopback stand-in for SendGrid), parsed back with
icalendar; and the two calendar routes of the real web app (a digest's, the exchange's
subscribable one) with their conditional GETs."""

from __future__ import annotations

import base64
import email
import email.policy
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import icalendar
from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import (
    Contact,
    Database,
    Delivery,
    Digest,
    DigestItem,
    Item,
    ListMembership,
    Source,
    Translation,
)
from newsexchange.delivery.outbox import enqueue_deliveries
from newsexchange.delivery.send import run_send
from newsexchange.digest.content import digest_content
from newsexchange.digest.ics import calendar_bytes, content_events, digest_calendar
from newsexchange.mail.sendgrid import SendgridMailer
from tests.servers import HTTPServer, SMTPServer
from tests.test_delivery_support import NOW, delivery_config, seed_digest
from tests.test_sendgrid import FakeSendGrid, assert_valid_v3_mail_send
from tests.test_web_ops import served

HEL = ZoneInfo("Europe/Helsinki")
ATOM = "{http://www.w3.org/2005/Atom}"
EXCHANGE = "joensuu-to-petrozavodsk"
EXCHANGE_NAME = "Новости Йоэнсуу и Северной Карелии"
HOST = "news.example.org"
# A title a hostile or careless feed could send: a line break followed by what would be a
# property of its own, and the characters iCalendar text escapes.
HOSTILE = "Джаз; вход свободный, бар\r\nDTSTART:19700101T000000Z\rLOCATION:нигде"
PEOPLE = [("Анна Смирнова", "anna@example.org"), ("Dmitri Orlov", "orlov@example.org")]


# -- set-up -------------------------------------------------------------------------------------


def _event(
    n: int,
    ru: str,
    *,
    start: datetime,
    end: datetime | None = None,
    tz: str | None = "Europe/Helsinki",
    all_day: bool = False,
    venue: str | None = None,
    town: str | None = None,
) -> dict[str, Any]:
    return {
        "n": n,
        "ru": ru,
        "start": start,
        "end": end,
        "tz": tz,
        "all_day": all_day,
        "venue": venue,
        "town": town,
    }


CONCERT = _event(
    1,
    "Концерт хора в Йоэнсуу",
    start=datetime(2026, 12, 12, 19, 0, tzinfo=HEL),
    end=datetime(2026, 12, 12, 21, 30, tzinfo=HEL),
    venue="Carelicum",
    town="Joensuu",
)
MARKET = _event(  # all day, no zone of its own (the region's), the source gave no end
    2,
    "Рождественская ярмарка",
    start=datetime(2026, 12, 19, 0, 0, tzinfo=HEL),
    tz=None,
    all_day=True,
    town="Joensuu",
)
JAZZ = _event(3, HOSTILE, start=datetime(2026, 12, 5, 20, 0, tzinfo=HEL), venue="Kerubi")


def _item(s: Any, ev: dict[str, Any], *, identity: str) -> Item:
    item = Item(
        source_id="yle",
        identity=identity,
        title=f"Tapahtuma {ev['n']}",
        summary_text=f"Tapahtuma {ev['n']}.",
        link=f"https://example.fi/events/{ev['n']}",
        region="joensuu",
        language="fi",
        published_at=datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
        content_hash=f"e-{identity}",
        event_start=ev["start"].astimezone(UTC),
        event_end=ev["end"].astimezone(UTC) if ev["end"] else None,
        event_timezone=ev["tz"],
        all_day=ev["all_day"],
        place_venue=ev["venue"],
        place_town=ev["town"],
    )
    item.translations.append(
        Translation(
            language="ru",
            title=ev["ru"],
            summary_text=f"{ev['ru']}: подробности.\nВторая строка.",
            provider="libre",
            status="done",
        )
    )
    s.add(item)
    return item


def seed_events_digest(
    db: Database,
    config: Config,
    events: list[dict[str, Any]],
    *,
    recipients: Sequence[tuple[str, str]] = (),
    state: str = "approved",
    period_start: date = date(2026, 11, 16),
    approved_at: datetime | None = NOW,
    items: list[int] | None = None,
    freeze: bool = True,
) -> tuple[int, list[int]]:
    """A digest of one news item and ``events`` (new items, or the existing ``items`` again),
    frozen as approval freezes it; returns (digest id, event item ids)."""
    with db.session() as s:
        if s.get(Source, "yle") is None:
            s.add(
                Source(id="yle", config_url="https://example.fi/rss", url="https://example.fi/rss")
            )
            s.flush()
        news = Item(
            source_id="yle",
            identity=f"news-{period_start}",
            title="Joensuun tori uudistuu",
            summary_text="Tori.",
            link="https://example.fi/news/1",
            region="joensuu",
            language="fi",
            published_at=datetime(2026, 11, 3, 9, 0, tzinfo=UTC),
            content_hash=f"n-{period_start}",
        )
        news.translations.append(
            Translation(language="ru", title="Площадь обновится", provider="libre", status="done")
        )
        s.add(news)
        event_items = (
            [s.get(Item, i) for i in items]
            if items is not None
            else [_item(s, ev, identity=f"ev-{period_start}-{ev['n']}") for ev in events]
        )
        s.flush()
        digest = Digest(
            exchange_id=EXCHANGE,
            period_start=period_start,
            period_end=period_start + timedelta(days=14),
            language="ru",
            state=state,
            subject="",
            token=f"tok-{period_start}",
            approved_at=approved_at,
            built_at=approved_at or NOW,
        )
        digest.entries.append(DigestItem(item_id=news.id, position=0, section="news"))
        for pos, item in enumerate(event_items, start=1):
            assert item is not None
            digest.entries.append(DigestItem(item_id=item.id, position=pos, section="events"))
        s.add(digest)
        s.flush()
        if freeze:
            digest.frozen = digest_content(s, config, digest)
        for name, addr in recipients:
            contact = Contact(email=addr, name=name, language="ru")
            contact.memberships.append(ListMembership(list_id="petrozavodsk-media"))
            s.add(contact)
        s.flush()
        if recipients:
            enqueue_deliveries(s, config, digest, now=NOW)
        return digest.id, [i.id for i in event_items if i is not None]


# -- reading it back ----------------------------------------------------------------------------


def _calendar_part(msg: EmailMessage) -> EmailMessage:
    assert msg.get_content_type() == "multipart/mixed"
    outer = list(msg.iter_parts())
    assert [p.get_content_type() for p in outer] == ["multipart/alternative", "text/calendar"]
    assert [p.get_content_type() for p in outer[0].iter_parts()] == ["text/plain", "text/html"]
    part = outer[1]
    assert isinstance(part, EmailMessage)
    assert part.get_content_disposition() == "attachment"
    assert part.get_filename() == "events.ics"
    assert part.get_param("method") == "PUBLISH"
    assert str(part.get_param("charset")).lower() == "utf-8"
    return part


def _ics_of(msg: EmailMessage) -> bytes:
    data = _calendar_part(msg).get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def _events(ics: bytes) -> dict[str, icalendar.Event]:
    cal = icalendar.Calendar.from_ical(ics)
    return {str(ev["UID"]): ev for ev in cal.walk("VEVENT")}


def _assert_well_formed(ics: bytes) -> None:
    """CRLF line ends, lines of at most 75 octets (RFC 5545 §3.1), one DTSTART per event."""
    assert ics.startswith(b"BEGIN:VCALENDAR\r\n") and ics.endswith(b"END:VCALENDAR\r\n")
    lines = ics.split(b"\r\n")[:-1]
    assert all(b"\n" not in ln and b"\r" not in ln for ln in lines)
    assert all(len(ln) <= 75 for ln in lines)
    starts = [ln for ln in lines if ln.startswith(b"DTSTART")]
    assert len(starts) == ics.count(b"BEGIN:VEVENT\r\n") + ics.count(b"BEGIN:STANDARD\r\n") + (
        ics.count(b"BEGIN:DAYLIGHT\r\n")
    )


def _assert_the_three_events(ics: bytes, ids: list[int]) -> None:
    _assert_well_formed(ics)
    cal = icalendar.Calendar.from_ical(ics)
    assert str(cal["METHOD"]) == "PUBLISH" and str(cal["VERSION"]) == "2.0"
    assert str(cal["CALSCALE"]) == "GREGORIAN"
    assert str(cal["X-WR-CALNAME"]) == EXCHANGE_NAME
    assert {str(tz["TZID"]) for tz in cal.walk("VTIMEZONE")} == {"Europe/Helsinki"}
    events = _events(ics)
    concert_id, market_id, jazz_id = ids
    assert set(events) == {f"item-{i}@{HOST}" for i in ids}

    concert = events[f"item-{concert_id}@{HOST}"]
    assert str(concert["SUMMARY"]) == "Концерт хора в Йоэнсуу"
    assert concert["DTSTART"].params["TZID"] == "Europe/Helsinki"
    assert concert.decoded("DTSTART") == CONCERT["start"]
    assert concert.decoded("DTSTART").utcoffset() == timedelta(hours=2)
    assert concert.decoded("DTEND") == CONCERT["end"]
    assert str(concert["LOCATION"]) == "Carelicum, Joensuu"
    assert str(concert["URL"]) == "https://example.fi/events/1"
    description = str(concert["DESCRIPTION"])
    assert "Концерт хора в Йоэнсуу: подробности.\nВторая строка." in description
    assert description.endswith("Источник: Yle Pohjois-Karjala")
    assert concert.decoded("DTSTAMP") == NOW

    market = events[f"item-{market_id}@{HOST}"]
    assert market["DTSTART"].params.get("VALUE") == "DATE"
    assert market.decoded("DTSTART") == date(2026, 12, 19)
    assert market.decoded("DTEND") == date(2026, 12, 20)  # exclusive: the one day
    assert str(market["LOCATION"]) == "Joensuu"

    jazz = events[f"item-{jazz_id}@{HOST}"]
    # Line breaks folded to spaces; ';' and ',' come back as written; nothing became a
    # property of its own.
    assert str(jazz["SUMMARY"]) == (
        "Джаз; вход свободный, бар DTSTART:19700101T000000Z LOCATION:нигде"
    )
    assert jazz.decoded("DTSTART") == JAZZ["start"]
    assert str(jazz["LOCATION"]) == "Kerubi"


def _unsubscribe_url(msg: EmailMessage) -> str:
    https = re.findall(r"<(https://[^>]+)>", str(msg["List-Unsubscribe"]))
    assert len(https) == 1
    return https[0]


# -- the attachment -----------------------------------------------------------------------------


def test_smtp_copies_carry_the_same_calendar_and_each_their_own_unsubscribe_link(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    did, ids = seed_events_digest(db, cfg, [CONCERT, MARKET, JAZZ], recipients=PEOPLE)

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert report.sent == 2 and report.ok
    calendars, links = [], []
    for _name, addr in PEOPLE:
        (msg,) = smtp_server.received_by(addr)
        ics = _ics_of(msg)
        _assert_the_three_events(ics, ids)
        calendars.append(ics)
        url = _unsubscribe_url(msg)
        links.append(url)
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert url in text and f'href="{url}"' in html
        assert "%%" not in text and "%%" not in html
        assert "Концерт хора в Йоэнсуу" in html
    assert calendars[0] == calendars[1]
    assert links[0] != links[1]
    with db.session() as s:
        digest = s.get(Digest, did)
        assert digest is not None
        assert calendars[0] == digest_calendar(s, cfg, digest)  # the route's source too
        rows = s.scalars(select(Delivery).where(Delivery.digest_id == did)).all()
    assert {r.status for r in rows} == {"sent"}
    for _f, _rcpts, raw in smtp_server.envelopes:
        assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_outbox_writes_the_calendar_into_every_eml(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    tmp_path: Path,
) -> None:
    cfg = delivery_config(write_config, backend="outbox")
    db = db_for(cfg)
    did, ids = seed_events_digest(db, cfg, [CONCERT, MARKET, JAZZ], recipients=PEOPLE)

    assert run_send(db, cfg, now=NOW, digest_id=did).sent == 2

    files = sorted((tmp_path / "var" / "outbox").glob("*.eml"))
    assert len(files) == 2
    seen = set()
    for path in files:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        _assert_the_three_events(_ics_of(msg), ids)
        seen.add(_unsubscribe_url(msg))
    assert len(seen) == 2


def test_a_digest_without_events_has_no_attachment(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    did = seed_digest(db, cfg, PEOPLE[:1])
    with db.session() as s:
        digest = s.get(Digest, did)
        assert digest is not None and digest_calendar(s, cfg, digest) is None

    assert run_send(db, cfg, now=NOW, digest_id=did).sent == 1

    (msg,) = smtp_server.messages
    assert msg.get_content_type() == "multipart/alternative"
    assert list(msg.iter_attachments()) == []  # type: ignore[attr-defined]
    assert b"text/calendar" not in smtp_server.envelopes[0][2]


def test_sendgrid_request_carries_the_calendar_once_for_every_personalization(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    http_server: HTTPServer,
) -> None:
    sendgrid = FakeSendGrid(http_server)
    cfg = delivery_config(write_config, backend="sendgrid", sendgrid_url=http_server.url)
    db = db_for(cfg)
    did, ids = seed_events_digest(db, cfg, [CONCERT, MARKET, JAZZ], recipients=PEOPLE)

    report = run_send(db, cfg, now=NOW, digest_id=did, mailer=SendgridMailer(cfg))

    assert report.sent == 2 and report.ok
    (body,) = sendgrid.accepted
    assert_valid_v3_mail_send(body)
    assert len(body["personalizations"]) == 2
    (attachment,) = body["attachments"]
    # The API refuses a type with ';' in it: the bare type, METHOD is in the file.
    assert attachment["type"] == "text/calendar"
    assert attachment["filename"] == "events.ics"
    assert attachment["disposition"] == "attachment"
    ics = base64.b64decode(attachment["content"], validate=True)
    _assert_the_three_events(ics, ids)
    with db.session() as s:
        digest = s.get(Digest, did)
        assert digest is not None and ics == digest_calendar(s, cfg, digest)
    urls = {p["substitutions"]["%%UNSUBSCRIBE_URL%%"] for p in body["personalizations"]}
    assert len(urls) == 2
    assert all("%%UNSUBSCRIBE_URL%%" in c["value"] for c in body["content"])


# -- pure building -------------------------------------------------------------------------------


def test_the_same_content_gives_the_same_bytes_and_old_content_is_read(
    write_config: Callable[..., Config],
) -> None:
    cfg = delivery_config(write_config)
    exchange = cfg.exchange(EXCHANGE)
    old_item = {  # as content frozen before event_start existed: event_at alone
        "position": 1,
        "section": "events",
        "item_id": 7,
        "title": "Ледовый фестиваль",
        "summary_text": "",
        "source_name": "Yle",
        "region": "joensuu",
        "link": "javascript:alert(1)",
        "event_at": datetime(2026, 2, 14, 0, 0, tzinfo=HEL).astimezone(UTC).isoformat(),
    }
    timed = {**old_item, "item_id": 8, "event_at": "2026-02-14T15:30:00+00:00"}
    broken = [  # not what we write: left out, the rest of the file stands
        {**old_item, "item_id": None},
        {**old_item, "item_id": 9, "event_at": "14.2.2026"},
        {**old_item, "item_id": 10, "place": "Joensuu"},
        "not an item",
    ]
    content = {
        "language": "ru",
        "items": [old_item, timed, {**old_item, "section": "news"}, *broken],
    }

    first = calendar_bytes(cfg, exchange, content_events(cfg, content, stamp=NOW))
    again = calendar_bytes(cfg, exchange, content_events(cfg, content, stamp=NOW))

    assert first == again
    events = _events(first)
    assert set(events) == {f"item-7@{HOST}", f"item-8@{HOST}", f"item-10@{HOST}"}
    assert "LOCATION" not in events[f"item-10@{HOST}"]
    whole_day = events[f"item-7@{HOST}"]
    assert whole_day.decoded("DTSTART") == date(2026, 2, 14)
    assert whole_day.decoded("DTEND") == date(2026, 2, 15)
    assert "URL" not in whole_day  # not an http(s) link
    assert events[f"item-8@{HOST}"].decoded("DTSTART") == datetime(2026, 2, 14, 17, 30, tzinfo=HEL)
    later = calendar_bytes(
        cfg, exchange, content_events(cfg, content, stamp=NOW + timedelta(days=1))
    )
    assert later != first  # the stamp is part of it: a later approval updates the event


# -- the routes --------------------------------------------------------------------------------

WEB_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_the_calendar_routes_are_public_with_their_digests_and_answer_conditional_gets(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
) -> None:
    cfg = delivery_config(write_config, backend="outbox")
    db = db_for(cfg)
    # A digest of last year's summer, long over: in its own calendar, not the exchange's.
    summer = _event(9, "Летний фестиваль", start=datetime(2025, 6, 10, 12, 0, tzinfo=HEL))
    old, _ = seed_events_digest(
        db,
        cfg,
        [summer],
        state="sent",
        period_start=date(2025, 6, 1),
        approved_at=datetime(2025, 6, 1, 7, 0, tzinfo=UTC),
    )
    first_at = datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
    first, (concert_id, market_id) = seed_events_digest(
        db,
        cfg,
        [CONCERT, MARKET],
        state="sent",
        period_start=date(2026, 11, 1),
        approved_at=first_at,
    )
    # The concert's translation is corrected, and the next digest carries it again.
    with db.session() as s:
        tr = s.scalars(select(Translation).join(Item).where(Item.id == concert_id)).one()
        tr.title = "Концерт хора (перенесён в Carelicum)"
    second, _ = seed_events_digest(
        db, cfg, [], state="approved", period_start=date(2026, 11, 16), items=[concert_id]
    )
    draft, (draft_event,) = seed_events_digest(
        db,
        cfg,
        [JAZZ],
        state="draft",
        period_start=date(2026, 12, 1),
        approved_at=None,
        freeze=False,
    )
    base = f"/archive/{EXCHANGE}/events.ics"

    with served(cfg, db, clock=lambda: WEB_NOW) as url:
        own = httpx.get(f"{url}/digests/{first}/events.ics")
        own_old = httpx.get(f"{url}/digests/{old}/events.ics")
        own_second = httpx.get(f"{url}/digests/{second}/events.ics")
        draft_res = httpx.get(f"{url}/digests/{draft}/events.ics")
        missing = httpx.get(f"{url}/digests/99999/events.ics")
        whole = httpx.get(f"{url}{base}")
        etag, modified = whole.headers["etag"], whole.headers["last-modified"]
        same = httpx.get(f"{url}{base}", headers={"If-None-Match": etag})
        weak = httpx.get(f"{url}{base}", headers={"If-None-Match": f'"x", W/{etag}'})
        stale = httpx.get(f"{url}{base}", headers={"If-None-Match": '"other"'})
        since = httpx.get(f"{url}{base}", headers={"If-Modified-Since": modified})
        before = httpx.get(
            f"{url}{base}", headers={"If-Modified-Since": "Sat, 01 Nov 2025 00:00:00 GMT"}
        )
        head = httpx.head(f"{url}{base}")
        unknown = httpx.get(f"{url}/archive/no-such-exchange/events.ics")
        hostile = httpx.get(f"{url}/archive/%0d%0aX:1/events.ics")
        page = httpx.get(f"{url}/archive/{EXCHANGE}")
        atom = httpx.get(f"{url}/archive/{EXCHANGE}/atom.xml")

    assert own.status_code == 200
    assert own.headers["content-type"] == "text/calendar; charset=utf-8"
    assert set(_events(own.content)) == {f"item-{concert_id}@{HOST}", f"item-{market_id}@{HOST}"}
    assert own.headers["last-modified"] == "Sun, 01 Nov 2026 07:00:00 GMT"
    assert own_old.status_code == 200 and len(_events(own_old.content)) == 1
    (again,) = _events(own_second.content).values()
    assert str(again["SUMMARY"]) == "Концерт хора (перенесён в Carelicum)"
    assert str(_events(own.content)[f"item-{concert_id}@{HOST}"]["SUMMARY"]) == CONCERT["ru"]
    assert draft_res.status_code == 404 and missing.status_code == 404
    assert b"BEGIN:VCALENDAR" not in draft_res.content
    assert draft_res.text == missing.text  # the same 404 whether it exists or not

    assert whole.status_code == 200
    assert whole.headers["content-type"] == "text/calendar; charset=utf-8"
    assert "max-age" in whole.headers["cache-control"]
    _assert_well_formed(whole.content)
    cal = icalendar.Calendar.from_ical(whole.content)
    assert str(cal["X-WR-CALNAME"]) == EXCHANGE_NAME
    assert "REFRESH-INTERVAL" in cal
    events = _events(whole.content)
    # Each event once (the copy approved last); the draft's and last year's are not there.
    assert set(events) == {f"item-{concert_id}@{HOST}", f"item-{market_id}@{HOST}"}
    assert f"item-{draft_event}@{HOST}" not in events
    concert = events[f"item-{concert_id}@{HOST}"]
    assert str(concert["SUMMARY"]) == "Концерт хора (перенесён в Carelicum)"
    assert concert.decoded("DTSTAMP") == NOW  # the second digest's approval
    assert str(events[f"item-{market_id}@{HOST}"]["SUMMARY"]) == "Рождественская ярмарка"
    assert modified == "Mon, 16 Nov 2026 07:00:00 GMT"  # the newest approval

    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    assert weak.status_code == 304
    assert stale.status_code == 200 and stale.content == whole.content
    assert since.status_code == 304
    assert before.status_code == 200
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == etag
    assert unknown.status_code == 404 and hostile.status_code == 404

    assert page.status_code == 200
    assert f'href="{base}"' in page.text
    assert f'href="webcal://{HOST}{base}"' in page.text
    assert 'type="text/calendar"' in page.text
    related = [
        link
        for link in ET.fromstring(atom.content).iter(f"{ATOM}link")  # noqa: S314 - our feed
        if link.get("rel") == "related"
    ]
    assert [(x.get("href"), x.get("type")) for x in related] == [
        (f"https://{HOST}{base}", "text/calendar")
    ]


def test_an_event_in_a_new_digest_changes_the_exchange_calendar_etag(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
) -> None:
    cfg = delivery_config(write_config, backend="outbox")
    db = db_for(cfg)
    seed_events_digest(db, cfg, [CONCERT], state="sent", period_start=date(2026, 11, 1))
    base = f"/archive/{EXCHANGE}/events.ics"
    with served(cfg, db, clock=lambda: WEB_NOW) as url:
        before = httpx.get(f"{url}{base}")
        seed_events_digest(db, cfg, [MARKET], state="approved", period_start=date(2026, 11, 16))
        after = httpx.get(f"{url}{base}", headers={"If-None-Match": before.headers["etag"]})
    assert before.status_code == 200 and len(_events(before.content)) == 1
    assert after.status_code == 200 and len(_events(after.content)) == 2
    assert after.headers["etag"] != before.headers["etag"]


def test_an_event_its_calendar_cancels_shows_cancelled_on_the_web_and_not_in_the_approved_mail(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
) -> None:
    """Subscribers' calendars take over a cancellation (STATUS:CANCELLED, a higher SEQUENCE,
    a newer Last-Modified); the mail's attachment stays what the editors approved."""
    cfg = delivery_config(write_config, backend="outbox")
    db = db_for(cfg)
    digest_id, (concert_id, market_id) = seed_events_digest(
        db, cfg, [CONCERT, MARKET], state="sent", period_start=date(2026, 11, 1)
    )
    base = f"/archive/{EXCHANGE}/events.ics"
    noticed = WEB_NOW - timedelta(hours=1)
    with served(cfg, db, clock=lambda: WEB_NOW) as url:
        before = httpx.get(f"{url}{base}")
        with db.session() as s:
            s.get(Item, concert_id).cancelled_at = noticed  # type: ignore[union-attr]
        after = httpx.get(
            f"{url}{base}", headers={"If-Modified-Since": before.headers["last-modified"]}
        )
        own = httpx.get(f"{url}/digests/{digest_id}/events.ics")
    assert after.status_code == 200  # changed since: not a 304
    for body in (after.content, own.content):
        events = {int(e["uid"].split("-")[1].split("@")[0]): e for e in _events(body).values()}
        assert events[concert_id]["status"] == "CANCELLED"
        assert events[concert_id]["sequence"] == 1
        assert events[concert_id].decoded("dtstamp") == noticed
        assert "status" not in events[market_id] and events[market_id]["sequence"] == 0
    with db.session() as s:
        mailed = digest_calendar(s, cfg, s.get(Digest, digest_id))  # type: ignore[arg-type]
    assert mailed is not None and b"CANCELLED" not in mailed
