"""A digest's events as an iCalendar file (RFC 5545): attached to the mail, linked from it,
and, for every public digest of an exchange together, the archive's subscribable calendar.

The addresses are fixed here so that the templates, the mail and the web routes agree:

- ``{public_url}/digests/{digest_id}/events.ics``: one digest's events (public once the
  digest is, like ``/digests/{digest_id}``);
- ``{public_url}/archive/{exchange}/events.ics``: the exchange's calendar.

What goes in is the digest's content as rendering shows it (:mod:`.content`: the frozen copy
once approved), the items of the ``events`` section, so the calendar says what the mail
says, in the digest's language. The building is pure (:func:`content_events`,
:func:`merge_events`, :func:`calendar_bytes`: plain data in, bytes out) and deterministic:
the same content and stamp give the same bytes, which is what lets the web routes answer a
conditional GET with an ETag of the body.

Choices a calendar program notices:

- ``UID`` is ``item-{item_id}@{public host}``: the same event in two digests (or in a
  digest's attachment and the subscribed calendar) is one event that updates, not two.
- ``DTSTAMP`` is when the digest was approved (its build time before that), not the time
  of the request: RFC 5546 §2.1.5 lets the later DTSTAMP win between copies of equal
  ``SEQUENCE``. ``SEQUENCE`` stays 0 on purpose: a digest's ``version`` restarts at 1 in
  the next digest, so a copy from a newer digest would carry a *lower* sequence than an
  older one and clients would ignore the update (RFC 5546 §2.1.4); approval times only
  grow.
- Times carry the event's zone (``TZID``, the zone the source gave, else its region's) with
  a ``VTIMEZONE`` for each (icalendar's ``add_missing_timezones``, over the span of the
  calendar's own events only, so the file stays small); an all-day event is
  ``VALUE=DATE`` with the day after its last day as ``DTEND`` (RFC 5545 §3.6.1).
- Text (titles, places, summaries) is the feeds' text: CR/LF and control characters are
  folded to spaces in one-line properties before icalendar escapes ``\\ ; ,`` and line
  breaks, so a title can never start a property of its own. A link that is not a plain
  http(s) URL is left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar

from newsexchange import __version__
from newsexchange.config import Config, ExchangeSettings
from newsexchange.db import Digest, Session
from newsexchange.db.queries.items import cancelled_items
from newsexchange.digest.content import shown_content
from newsexchange.i18n import gettext_for

__all__ = [
    "CALENDAR_TYPE",
    "CalendarEvent",
    "calendar_bytes",
    "content_events",
    "digest_calendar",
    "digest_calendar_url",
    "digest_stamp",
    "exchange_calendar_url",
    "merge_events",
    "with_cancellations",
]

# The attachment's and the routes' Content-Type (RFC 5545 §8.1; METHOD as in the body).
CALENDAR_TYPE = "text/calendar; charset=utf-8; method=PUBLISH"
PRODID = f"-//newsexchange//newsexchange {__version__}//EN"
# A subscribed calendar is asked for again about this often (RFC 7986 REFRESH-INTERVAL, and
# the X-PUBLISHED-TTL Outlook and Apple read): digests come twice a month.
REFRESH = timedelta(hours=12)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_URL = re.compile(r"^https?://[^\s\x00-\x1f\x7f<>\"]+$", re.IGNORECASE)


def digest_calendar_url(config: Config, digest_id: int) -> str:
    """Where one digest's ``.ics`` is served (the link in the mail)."""
    return f"{config.public_url}/digests/{digest_id}/events.ics"


def exchange_calendar_url(config: Config, exchange_id: str) -> str:
    """The exchange's subscribable calendar (every sent digest's events)."""
    return f"{config.public_url}/archive/{exchange_id}/events.ics"


@dataclass(frozen=True)
class CalendarEvent:
    """One VEVENT, as plain data: ``start``/``end`` aware datetimes in the event's zone, or
    dates when ``all_day`` (``end`` then exclusive, the day after the last day)."""

    uid: str
    item_id: int
    stamp: datetime  # UTC
    start: datetime | date
    end: datetime | date | None
    all_day: bool
    title: str
    description: str
    location: str | None
    url: str | None
    cancelled: bool = False  # its calendar cancelled it since (STATUS:CANCELLED, SEQUENCE 1)


# -- content → events ---------------------------------------------------------------------------


def _line(text: Any) -> str:
    """One-line text: CR, LF and other control characters become single spaces."""
    return " ".join(_CONTROL.sub(" ", str(text or "")).split())


def _paragraphs(text: Any) -> str:
    """Multi-line text: line breaks kept (as LF; icalendar writes them ``\\n``), other
    control characters gone, blank runs squeezed."""
    lines = str(text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cleaned = [" ".join(_CONTROL.sub(" ", ln).split()) for ln in lines]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(cleaned)).strip()


def _zone(config: Config, item: Mapping[str, Any]) -> ZoneInfo:
    name = item.get("event_timezone")
    if name:
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            pass  # a zone this machine does not know: the region's, as rendering does
    return config.region_tz(str(item.get("region") or ""))


def _moment(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _host(config: Config) -> str:
    return (urlsplit(config.public_url).hostname or "newsexchange.invalid").lower()


def _when(
    config: Config, item: Mapping[str, Any]
) -> tuple[datetime | date, datetime | date | None, bool] | None:
    """(start, end, all_day) of an event item in its zone; None when it has no start."""
    old = "event_start" not in item  # content frozen before event_start existed
    start_utc = _moment(item.get("event_start") or item.get("event_at"))
    if start_utc is None:
        return None
    tz = _zone(config, item)
    start = start_utc.astimezone(tz)
    end_utc = _moment(item.get("event_end"))
    # Old content knew only a start; a local midnight there was a date without a time of
    # day (rendering reads it so too).
    all_day = bool(item.get("all_day")) or (old and (start.hour, start.minute) == (0, 0))
    if all_day:
        first = start.date()
        if end_utc is None:
            return first, first + timedelta(days=1), True
        end = end_utc.astimezone(tz)
        # An end at local midnight is already the exclusive day after; any other end time
        # names the last day itself.
        midnight = (end.hour, end.minute, end.second) == (0, 0, 0)
        after = end.date() if midnight else end.date() + timedelta(days=1)
        return first, max(after, first + timedelta(days=1)), True
    end_local = end_utc.astimezone(tz) if end_utc is not None else None
    if end_local is not None and end_local < start:
        end_local = None  # a source's end before its start: shown as a start alone
    return start, end_local, False


def content_events(
    config: Config, content: Mapping[str, Any], *, stamp: datetime
) -> list[CalendarEvent]:
    """The events section of a digest's content (:func:`.content.shown_content`) as
    :class:`CalendarEvent` values, in the digest's language, in the digest's order.

    ``stamp``: when the digest was approved (:func:`digest_stamp`), the DTSTAMP."""
    _ = gettext_for(str(content.get("language") or "en"))
    host = _host(config)
    events: list[CalendarEvent] = []
    for item in content.get("items") or []:
        # Content is data from the database (frozen JSON, perhaps of an older schema): an
        # item that is not what we wrote is left out rather than failing the whole file.
        if not isinstance(item, Mapping) or item.get("section") != "events":
            continue
        item_id = item.get("item_id")
        when = _when(config, item)
        if not isinstance(item_id, int) or isinstance(item_id, bool) or when is None:
            continue
        start, end, all_day = when
        given = item.get("place")
        place: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        location = ", ".join(p for p in (_line(place.get("venue")), _line(place.get("town"))) if p)
        source = _line(item.get("source_name") or item.get("source_id"))
        summary = _paragraphs(item.get("summary_text"))
        description = "\n\n".join(
            p for p in (summary, f"{_('Source')}: {source}" if source else "") if p
        )
        link = str(item.get("link") or "")
        events.append(
            CalendarEvent(
                uid=f"item-{item_id}@{host}",
                item_id=item_id,
                stamp=stamp.astimezone(UTC),
                start=start,
                end=end,
                all_day=all_day,
                title=_line(item.get("title")) or "—",
                description=description,
                location=location or None,
                url=link if _URL.match(link) else None,
            )
        )
    return events


def merge_events(
    batches: Iterable[Sequence[CalendarEvent]],
    *,
    now: datetime,
    keep_days: int = 366,
    limit: int = 1000,
) -> list[CalendarEvent]:
    """The events of many digests as one calendar: one event per item (the copy with the
    latest stamp, i.e. from the digest approved last), events that ended more than
    ``keep_days`` before ``now`` dropped, at most ``limit`` (the latest starts), ordered by
    start then UID."""
    latest: dict[str, CalendarEvent] = {}
    for batch in batches:
        for ev in batch:
            held = latest.get(ev.uid)
            if held is None or ev.stamp >= held.stamp:
                latest[ev.uid] = ev
    cutoff = now.astimezone(UTC) - timedelta(days=keep_days)
    kept = [ev for ev in latest.values() if _utc(ev.end or ev.start) >= cutoff]
    kept.sort(key=lambda ev: (_utc(ev.start), ev.uid))
    return kept[-limit:] if limit else kept


def _utc(moment: datetime | date) -> datetime:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


# -- events → bytes -----------------------------------------------------------------------------


def calendar_bytes(
    config: Config,
    exchange: ExchangeSettings,
    events: Sequence[CalendarEvent],
    *,
    name: str | None = None,
    subscribable: bool = False,
) -> bytes:
    """An RFC 5545 VCALENDAR (METHOD:PUBLISH) of ``events``; ``name`` (default the
    exchange's) is the calendar's name; ``subscribable`` adds the refresh interval a
    subscribed calendar is polled at. Deterministic for the same arguments."""
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    title = _line(name or exchange.display_name)
    cal.add("x-wr-calname", title)
    cal.add("name", title)  # RFC 7986
    cal.add("x-wr-timezone", str(config.exchange_tz(exchange)))
    if subscribable:
        cal.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
        cal.add("x-published-ttl", REFRESH)
    for ev in events:
        vevent = icalendar.Event()
        vevent.add("uid", ev.uid)
        vevent.add("dtstamp", ev.stamp.astimezone(UTC))
        # A cancellation is a change subscribers must take over the copy they hold: a higher
        # SEQUENCE (RFC 5546 §2.1.4), and the DTSTAMP of when it was noticed.
        vevent.add("sequence", 1 if ev.cancelled else 0)
        if ev.cancelled:
            vevent.add("status", "CANCELLED")
        vevent.add("dtstart", ev.start)
        if ev.end is not None:
            vevent.add("dtend", ev.end)
        if ev.all_day:
            vevent.add("transp", "TRANSPARENT")  # a festival day does not make one busy
        vevent.add("summary", ev.title)
        if ev.location:
            vevent.add("location", ev.location)
        if ev.description:
            vevent.add("description", ev.description)
        if ev.url:
            vevent.add("url", ev.url)
        cal.add_component(vevent)
    timed = [_utc(m).date() for ev in events if not ev.all_day for m in (ev.start, ev.end) if m]
    if timed:
        # Transitions over the events' span only (icalendar's default, 1970–2038, writes
        # every rule change since 1970 into each VTIMEZONE).
        cal.add_missing_timezones(
            first_date=min(timed) - timedelta(days=1), last_date=max(timed) + timedelta(days=1)
        )
    return bytes(cal.to_ical())


def with_cancellations(session: Session, events: Sequence[CalendarEvent]) -> list[CalendarEvent]:
    """``events`` with those whose item its calendar has cancelled since marked so (the web's
    calendars: a subscriber's copy then shows the event cancelled). The mail's attachment
    stays as approved, like the mail's text."""
    cancelled = cancelled_items(session, [ev.item_id for ev in events])
    return [
        replace(ev, cancelled=True, stamp=max(ev.stamp, cancelled[ev.item_id]))
        if ev.item_id in cancelled
        else ev
        for ev in events
    ]


def digest_stamp(digest: Digest) -> datetime:
    """A digest's DTSTAMP: when it was approved, else when it was last built."""
    moment = digest.approved_at or digest.built_at or digest.created_at
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def digest_calendar(session: Session, config: Config, digest: Digest) -> bytes | None:
    """The ``.ics`` of ``digest``'s events (its frozen content once approved), or None when
    it has no event: then the mail carries no attachment."""
    content = shown_content(session, config, digest)
    events = content_events(config, content, stamp=digest_stamp(digest))
    if not events:
        return None
    exchange = config.exchange(digest.exchange_id)
    return calendar_bytes(config, exchange, events)
