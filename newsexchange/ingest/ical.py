"""Calendars (``kind: ical`` sources, RFC 5545) → :class:`ParsedFeed`, one entry per occurrence.

icalendar reads the file (its VTIMEZONEs included); recurring-ical-events expands RRULE,
RDATE, EXDATE and RECURRENCE-ID overrides, and applies a Google export's ``X-WR-TIMEZONE``
(through x-wr-timezone) before anything else. What this module adds is the exchange's view:

* **The window.** Only occurrences that *start* from a day before ``now`` up to
  ``window_days`` after it are read, at most :data:`MAX_OCCURRENCES` of them (the earliest
  first): an RRULE without an end is bounded by the window, a minutely one by the cap. The
  window is walked a week at a time so that no single expansion is larger than a week's.
* **Identity.** A single event's guid is its ``UID``; an occurrence of a recurring one is
  ``UID/`` + its *original* start (its RECURRENCE-ID, in UTC), so an occurrence the calendar
  moves to another day keeps its identity and is updated in place rather than duplicated.
* **Cancellations.** An EXDATE removes an occurrence (the library does it); an override or a
  single event with ``STATUS:CANCELLED`` is not an event either, and is left out.
* **Times.** Stored in UTC. ``event_timezone`` is the IANA name the calendar gave (a TZID
  such as ``Europe/Moscow``, or a Windows name such as ``FLE Standard Time`` mapped with
  icalendar's table, preferring the region's own zone when it keeps the same clock); a TZID
  that is neither has its time converted by the VTIMEZONE's rules and no name. A UTC time
  (``…Z``) or a floating one (no zone: read in the region's zone) says nothing about where
  the event is, so it gets no name either; the region's zone is then the local one.
* **Whole days.** ``DTSTART;VALUE=DATE`` is an all-day event: it starts at local midnight of
  its first day (the region's zone) and ends at midnight after its last one (DTEND is already
  exclusive; without one it lasts one day).
* **Text.** SUMMARY is the title; DESCRIPTION (plain text by the RFC, HTML in some exports)
  goes through the same sanitizer as a feed's summary; LOCATION is split into venue and town
  (:func:`.places.split_place` with the region's places); URL is the link.

A body that is not an iCalendar file raises ``FetchError(retryable=False)``; a broken VEVENT
is skipped and counted in ``ParsedFeed.problem``, the rest of the calendar still counts.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from newsexchange.errors import FetchError
from newsexchange.ingest.charset import decide_charset
from newsexchange.ingest.clean import clean_url, collapse, sanitize_html, to_text
from newsexchange.ingest.model import ParsedEntry, ParsedFeed
from newsexchange.ingest.places import PlaceMatcher, split_place

if TYPE_CHECKING:  # icalendar is imported where a kind: ical source is read
    import icalendar

__all__ = ["ICAL_ACCEPT", "MAX_OCCURRENCES", "description_html", "parse_calendar", "zone_name"]

#: What a calendar fetch asks for: some servers hand an .ics address HTML unless asked.
ICAL_ACCEPT = "text/calendar, text/plain;q=0.5, */*;q=0.1"
#: Occurrences kept per source and fetch; more is a calendar gone wrong (or a minutely RRULE).
MAX_OCCURRENCES = 2000
#: How far back the window reaches: an event that began this morning is still news.
LOOKBACK = timedelta(days=1)
#: The window is expanded this much at a time (see the module docstring).
_STEP = timedelta(days=7)
_HTMLISH = re.compile(r"<(?:[a-zA-Z][a-zA-Z0-9]*)(?:\s[^<>]*)?/?>|&(?:[a-z]+|#\d+);")


def parse_calendar(
    body: bytes,
    *,
    url: str,
    timezone: str | tzinfo = "UTC",
    places: Iterable[str] = (),
    window_days: int = 90,
    summary_chars: int = 500,
    content_type: str | None = None,
    now: datetime,
) -> ParsedFeed:
    """The occurrences of a calendar that start in ``[now − 1 day, now + window_days]``.

    ``timezone`` is the source region's zone (floating times and whole days are read in it),
    ``places`` the region's place names (an event's town is the first its LOCATION names).
    """
    cal, charset_note = _read(body, url, content_type)
    tz: tzinfo = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    broken = _drop_broken(cal)
    events = [c for c in cal.subcomponents if c.name == "VEVENT"]
    if not events and not broken:
        # An empty calendar is legal; it is also what a moved or emptied feed looks like.
        return ParsedFeed(
            title=_calendar_name(cal),
            link=clean_url(url, None),
            language=None,
            parser="ical",
            problem="the calendar has no events (VEVENT) at all",
        )
    recurring = {
        str(c.get("UID"))
        for c in events
        if any(k in c for k in ("RRULE", "RDATE", "RECURRENCE-ID"))
    }
    matcher = PlaceMatcher(places)
    start = now.astimezone(UTC) - LOOKBACK
    end = now.astimezone(UTC) + timedelta(days=window_days)
    entries: list[ParsedEntry] = []
    unreadable: set[str] = set()  # UIDs (an event's every occurrence fails alike)
    capped = False
    query, zone_note = _query(cal, url)
    try:
        for occ in _occurrences(query, start, end, tz):
            if len(entries) >= MAX_OCCURRENCES:
                capped = True
                break
            try:
                entry = _entry(
                    occ,
                    url=url,
                    tz=tz,
                    towns=matcher,
                    recurring=recurring,
                    summary_chars=summary_chars,
                )
            except (ValueError, TypeError, AttributeError, KeyError, OverflowError):
                unreadable.add(_text(occ.get("UID")))
                continue
            entries.append(entry)
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
        # What skip_bad_series does not catch: a recurrence the library cannot expand.
        raise FetchError(
            f"could not expand the calendar's events: {type(exc).__name__}: {exc}",
            url=url,
            retryable=False,
        ) from exc
    broken += len(unreadable)
    problems = [n for n in (charset_note, zone_note) if n]
    if broken:
        problems.append(f"{broken} broken event(s) (VEVENT) skipped")
    if capped:
        problems.append(
            f"more than {MAX_OCCURRENCES} occurrences in the next {window_days} days; "
            f"the first {MAX_OCCURRENCES} were kept"
        )
    return ParsedFeed(
        title=_calendar_name(cal),
        link=clean_url(url, None),
        language=None,
        entries=entries,
        problem="; ".join(problems) or None,
        # Only a whole reading vouches that a missing occurrence is gone: not when capped, nor
        # when an event could not be read (it may be one of the stored ones).
        complete_between=None if (capped or broken) else (start, end),
        parser="ical",
    )


# --- reading ------------------------------------------------------------------------------


def _decode(body: bytes, content_type: str | None) -> tuple[str, str | None]:
    """The calendar's text and a note when it was not plainly UTF-8. RFC 5545 says UTF-8;
    older municipal systems still write windows-1251 or latin-1 with or without saying so,
    which the feed path's charset rules (HTTP charset, else a Cyrillic-aware guess) read."""
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    ch = decide_charset(body, content_type)
    try:
        return ch.body.decode("utf-8"), ch.note or f"read as {ch.encoding}, not UTF-8"
    except UnicodeDecodeError:
        enc = ch.encoding or "utf-8"
        return body.decode(enc, errors="replace"), f"not valid {enc}; unreadable bytes replaced"


def _read(body: bytes, url: str, content_type: str | None) -> tuple[icalendar.Calendar, str | None]:
    if not body or not body.strip():
        raise FetchError(
            "empty response body where an iCalendar (.ics) file was expected",
            url=url,
            retryable=False,
        )
    text, note = _decode(body, content_type)
    text = text.lstrip("\ufeff \t\r\n")
    if not text[:15].upper().startswith("BEGIN:VCALENDAR"):
        head = collapse(text[:60])
        raise FetchError(
            f"not an iCalendar file: it does not begin with BEGIN:VCALENDAR (it begins {head!r})",
            url=url,
            retryable=False,
        )
    upper = text.upper()
    if "END:VCALENDAR" not in upper:
        raise FetchError(
            "not a readable iCalendar file: it ends before END:VCALENDAR (cut short?)",
            url=url,
            retryable=False,
        )
    if upper.count("BEGIN:VCALENDAR") > 1:
        raise FetchError(
            "not a readable iCalendar file: more than one VCALENDAR in one file",
            url=url,
            retryable=False,
        )
    import icalendar  # with recurring-ical-events ~5 MB: only for kind: ical sources

    try:
        cal = icalendar.Calendar.from_ical(text)
    except (ValueError, KeyError, IndexError) as exc:
        # icalendar quotes the whole calendar after its reason; the reason is enough.
        reason = str(exc).split(":", 1)[0] if "BEGIN:" in str(exc) else str(exc)
        raise FetchError(
            f"not a readable iCalendar file: {reason[:200]}", url=url, retryable=False
        ) from exc
    if not isinstance(cal, icalendar.Calendar):  # pragma: no cover - from_ical's contract
        raise FetchError("not an iCalendar file (no VCALENDAR)", url=url, retryable=False)
    return cal, note


def _drop_broken(cal: icalendar.Calendar) -> int:
    """Remove the VEVENTs that cannot be placed in time (no or unreadable DTSTART, a value
    icalendar could not parse), so they neither stop the expansion nor count as events."""
    kept: list[Any] = []
    broken = 0
    for c in cal.subcomponents:
        if c.name == "VEVENT" and not _usable(c):
            broken += 1
            continue
        if c.name == "VEVENT" and "DTEND" in c and _ends_before_start(c):
            # A typo in the end; the start is still right (the expansion would refuse the
            # whole series).
            del c["DTEND"]
        kept.append(c)
    cal.subcomponents[:] = kept
    return broken


def _usable(event: Any) -> bool:
    if getattr(event, "errors", None):
        return False
    try:
        start = event.decoded("DTSTART")
        if "DTEND" in event:
            event.decoded("DTEND")
        if "RECURRENCE-ID" in event:
            event.decoded("RECURRENCE-ID")
    except (KeyError, ValueError, TypeError):
        return False
    return isinstance(start, date)


def _ends_before_start(event: Any) -> bool:
    start, end = event.decoded("DTSTART"), event.decoded("DTEND")
    if isinstance(start, datetime) != isinstance(end, datetime):
        return True  # a date and a time mixed: RFC 5545 forbids it, the library refuses it
    if isinstance(start, datetime) and (start.tzinfo is None) != (end.tzinfo is None):
        return False
    return bool(end < start)


def _query(cal: icalendar.Calendar, url: str) -> tuple[Any, str | None]:
    """The expansion of the calendar, and a note when its X-WR-TIMEZONE had to be ignored."""
    import recurring_ical_events

    note = None
    for attempt in range(2):
        try:
            return recurring_ical_events.of(cal, skip_bad_series=True), note
        except (ZoneInfoNotFoundError, ValueError, KeyError) as exc:
            zone = _text(cal.get("X-WR-TIMEZONE"))
            if attempt or not zone:
                raise FetchError(
                    f"could not expand the calendar's events: {type(exc).__name__}: {exc}",
                    url=url,
                    retryable=False,
                ) from exc
            del cal["X-WR-TIMEZONE"]
            note = f"X-WR-TIMEZONE {zone!r} is not a known time zone and was ignored"
    raise AssertionError("unreachable")  # pragma: no cover


def _occurrences(query: Any, start: datetime, end: datetime, tz: tzinfo) -> Any:
    """Every non-cancelled occurrence starting in ``[start, end)``, earliest first."""
    lo = start
    while lo < end:
        hi = min(lo + _STEP, end)
        found = []
        for occ in query.between(lo, hi):
            s = _utc(occ.decoded("DTSTART"), tz)
            if lo <= s < hi or (hi == end and s == end):
                found.append((s, str(occ.get("UID", "")), occ))
        found.sort(key=lambda t: (t[0], t[1]))
        for _, _, occ in found:
            if str(occ.get("STATUS", "")).upper() != "CANCELLED":
                yield occ
        lo = hi


# --- one occurrence -----------------------------------------------------------------------


def _entry(
    occ: Any,
    *,
    url: str,
    tz: tzinfo,
    towns: PlaceMatcher,
    recurring: set[str],
    summary_chars: int,
) -> ParsedEntry:
    raw_start = occ.decoded("DTSTART")
    all_day = not isinstance(raw_start, datetime)
    start = _utc(raw_start, tz)
    raw_end = occ.decoded("DTEND") if "DTEND" in occ else None
    if raw_end is not None:
        end: datetime | None = _utc(raw_end, tz)
    else:
        end = _utc(raw_start + timedelta(days=1), tz) if all_day else None
    if end is not None and (end < start or (end == start and not all_day)):
        end = None  # an instant (no DTEND), or a calendar's typo: the start is still right
    link = clean_url(_text(occ.get("URL")), url)
    summary_html = description_html(_text(occ.get("DESCRIPTION")), link or url)
    summary_text = to_text(summary_html, summary_chars)
    title = collapse(_text(occ.get("SUMMARY")))
    if not title:
        title = to_text(summary_html, 120)
        if not title:
            raise ValueError("an event with neither SUMMARY nor DESCRIPTION")
    venue, town = split_place(_text(occ.get("LOCATION")) or None, towns)
    uid = _text(occ.get("UID")).strip() or None
    guid = uid
    if uid is not None and uid in recurring:
        rid = occ.decoded("RECURRENCE-ID") if "RECURRENCE-ID" in occ else raw_start
        guid = f"{uid}/{_identity_instant(rid, tz)}"
    modified = _stamp(occ, "LAST-MODIFIED")
    return ParsedEntry(
        guid=guid,
        link=link,
        title=title,
        summary_html=summary_html,
        summary_text=summary_text,
        # Never DTSTAMP: Google and Outlook stamp every export with the time of the export,
        # which says nothing about the event. Without LAST-MODIFIED or CREATED the event was
        # announced when it was first seen (the writer's rule for an undated entry).
        published_at=modified or _stamp(occ, "CREATED"),
        updated_at=modified,
        event_start=start,
        event_end=end,
        event_timezone=None if all_day else zone_name(raw_start, tz),
        all_day=all_day,
        place_venue=venue,
        place_town=town,
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):  # a property given twice: the first one
        value = value[0] if value else ""
    return str(value)


def description_html(text: str, base: str) -> str:
    """DESCRIPTION as safe HTML: plain text (the RFC's) becomes paragraphs and line breaks;
    the HTML some exports put there goes through the feed sanitizer as it is."""
    if not text.strip():
        return ""
    if not _HTMLISH.search(text):
        paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        text = "".join(
            "<p>" + "<br>".join(html.escape(line) for line in p.splitlines()) + "</p>"
            for p in paras
        )
    return sanitize_html(text, base)


def _utc(value: date | datetime, tz: tzinfo) -> datetime:
    """A DTSTART/DTEND value in UTC: a date is the region's local midnight, a floating time
    the region's local time."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def _identity_instant(value: date | datetime, tz: tzinfo) -> str:
    """An occurrence's original start as written into its guid: a date as the date, a time
    in UTC (so a change of the calendar's zone spelling does not change the identity)."""
    if not isinstance(value, datetime):
        return value.isoformat()
    return _utc(value, tz).strftime("%Y%m%dT%H%M%SZ")


def _stamp(occ: Any, name: str) -> datetime | None:
    if name not in occ:
        return None
    try:
        value = occ.decoded(name)
    except (KeyError, ValueError, TypeError):
        return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@lru_cache(maxsize=1)
def _iana() -> frozenset[str]:
    return frozenset(available_timezones())  # reads tzdata's index once, when first needed


def zone_name(value: datetime, region: tzinfo) -> str | None:
    """The IANA name of the zone a calendar time was given in, or None (UTC, floating, or a
    zone known only by its VTIMEZONE rules)."""
    tz = value.tzinfo
    if tz is None:
        return None
    key = getattr(tz, "key", None)  # zoneinfo
    if key is None:
        key = getattr(tz, "zone", None)  # pytz, if someone switched icalendar to it
    if key is None:
        key = _vtimezone_id(tz)
    if not key or key.upper() in ("UTC", "ETC/UTC", "Z", "GMT", "ETC/GMT"):
        return None
    if key in _iana():
        return str(key)
    from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

    mapped = WINDOWS_TO_OLSON.get(key)
    if mapped is None:
        return None
    # A Windows zone names several IANA zones with one clock ("FLE Standard Time" is
    # Helsinki, Kyiv, Riga, Sofia, Tallinn and Vilnius; the table says Kyiv). The region's
    # own zone is the better guess when it keeps the same clock all year.
    region_key = getattr(region, "key", None)
    if region_key and _same_clock(ZoneInfo(region_key), tz, value):
        return str(region_key)
    return str(mapped)


def _vtimezone_id(tz: tzinfo) -> str | None:
    """The TZID of a zone icalendar built from a VTIMEZONE (dateutil's ``tzical`` zone)."""
    for attr in ("_tzid", "tzid", "_s"):
        v = getattr(tz, attr, None)
        if isinstance(v, str):
            return v.strip("'\"")
    return None


def _same_clock(a: tzinfo, b: tzinfo, around: datetime) -> bool:
    year = around.year
    try:
        for month in (1, 4, 7, 10):
            probe = datetime(year, month, 15, 12)
            if probe.replace(tzinfo=a).utcoffset() != probe.replace(tzinfo=b).utcoffset():
                return False
    except (ZoneInfoNotFoundError, ValueError, OverflowError):
        return False
    return True


def _calendar_name(cal: icalendar.Calendar) -> str | None:
    name = collapse(_text(cal.get("X-WR-CALNAME") or cal.get("NAME")))
    return name or None
