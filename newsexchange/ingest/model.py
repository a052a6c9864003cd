"""What parsing hands to storage: plain, already-cleaned data (the contract between
``parse.py``/``clean.py`` and the fetch step)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class ParsedEntry:
    """One item as read from a feed or page, cleaned: safe HTML, plain text, UTC dates."""

    guid: str | None
    link: str | None  # absolute, tracking parameters stripped
    title: str  # plain text, whitespace collapsed
    summary_html: str  # sanitized with an allowlist; links absolute
    summary_text: str  # plain text of bounded length
    author: str | None = None
    image_url: str | None = None
    published_at: datetime | None = None  # aware, UTC; None when the feed gives no date
    updated_at: datetime | None = None
    # When the item is an event (a calendar's occurrence, a page's schema.org Event, a
    # listing with an event_date selector): when it starts and ends (aware, UTC), the zone it
    # was given in (IANA name, None when the source gave only an offset or nothing), whether it
    # is a whole-day event (then start/end are local midnights of its first and last+1 day,
    # read in event_timezone or the region's zone), and where it takes place.
    event_start: datetime | None = None
    event_end: datetime | None = None
    event_timezone: str | None = None
    all_day: bool = False
    place_venue: str | None = None  # "Carelicum", "Kansallinen teatteri"
    place_town: str | None = None  # "Joensuu", "Петрозаводск"


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    link: str | None
    language: str | None
    entries: list[ParsedEntry] = field(default_factory=list)
    problem: str | None = None  # a recoverable problem (partly broken feed), recorded per source
    # Calendars: the span of event starts (UTC, both ends included) the parse holds every
    # occurrence of. A stored event of the source starting within it that the parse no longer
    # has was cancelled or removed. None when the parse may be incomplete (capped, a broken
    # event skipped, an empty calendar) or the source is not a calendar.
    complete_between: tuple[datetime, datetime] | None = None
    parser: str = "feedparser"  # which parser produced it: "fast", "feedparser", "json", "html"
