"""schema.org ``Event`` data on an HTML page (JSON-LD or microdata) → :class:`ParsedFeed`.

Many event listings (city calendars, theatres, ticket sites) carry their events as
structured data for search engines; a ``kind: html`` source without ``select:`` reads only
that, so it needs no CSS selectors and survives a redesign of the page. Read here:

* **What is an event.** Any item whose ``@type`` is ``Event`` or one of its subtypes
  (``MusicEvent``, ``TheaterEvent``, ``Festival``, ``Hackathon``, ``EventSeries`` …),
  wherever it sits: top level, a list, an ``@graph``, an ``ItemList``'s ``itemListElement``
  (``ListItem.item`` or the event itself), another item's property, an event's
  ``subEvent``. An event with ``eventStatus`` ``EventCancelled`` is left out.
* **When.** ``startDate``/``endDate`` as ISO 8601; without a zone they are the region's
  local time; a date without a time makes the event all-day (it then ends at midnight after
  its ``endDate``, or lasts one day). Only an offset is ever given, so ``event_timezone``
  stays None (the region's zone is the local one).
* **Where.** ``location`` as a ``Place``: its ``name`` is the venue and
  ``address.addressLocality`` the town; a plain-text location or address is split with
  :func:`.places.split_place` and the region's places. A ``VirtualLocation`` is no place.
* **What.** ``name`` (required: an event without one is skipped and counted), ``url``
  (resolved against the page; else the page's own address), ``description`` (sanitized as a
  feed's summary is), ``image``.

extruct reads the microdata and parses the page; JSON-LD blocks are decoded one by one here
so that one broken block (a stray comma) does not hide the others (extruct would drop them
all). Nothing here touches the network: extruct's JSON-LD and microdata readers never fetch
(``@context`` is not resolved), and RDFa, the one syntax that could, is not asked for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from newsexchange.errors import FetchError
from newsexchange.ingest.clean import clean_url, collapse, to_text
from newsexchange.ingest.ical import description_html
from newsexchange.ingest.model import ParsedEntry, ParsedFeed
from newsexchange.ingest.places import PlaceMatcher, split_place

__all__ = ["NO_EVENTS", "distinct_event_guids", "is_event_type", "page_events", "parse_event_page"]

#: The message of a selector-less page that carries no event.
NO_EVENTS = "no select: and no schema.org Event (JSON-LD or microdata) on the page"
#: schema.org types under Event whose names do not end in "Event".
_EVENT_TYPES = frozenset({"Festival", "Hackathon", "EventSeries", "CourseInstance"})
_SCHEMA_PREFIX = re.compile(r"^(?:https?://)?(?:www\.)?schema\.org/", re.IGNORECASE)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LEADING_COMMENT = re.compile(r"^\s*(?://[^\n]*|<!--.*?-->)\s*", re.DOTALL)
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
#: More than this many events on one page is not a listing any reader will go through.
MAX_EVENTS = 2000


def _type_names(item: dict[str, Any]) -> list[str]:
    raw = item.get("@type", item.get("type"))
    names = raw if isinstance(raw, list) else [raw]
    return [_SCHEMA_PREFIX.sub("", n) for n in names if isinstance(n, str)]


def is_event_type(name: str) -> bool:
    """Whether a schema.org type name (with or without the schema.org prefix) is an Event."""
    short = _SCHEMA_PREFIX.sub("", name)
    return short == "Event" or short.endswith("Event") or short in _EVENT_TYPES


def _walk(node: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    """Every event dict in a JSON-LD / uniform microdata tree, in document order."""
    if depth > 12:  # real pages nest a few levels; deeper is a loop or a hostile page
        return
    if isinstance(node, list):
        for x in node:
            yield from _walk(x, depth + 1)
        return
    if not isinstance(node, dict):
        return
    if any(is_event_type(t) for t in _type_names(node)):
        yield node
        for sub in ("subEvent", "subEvents"):
            yield from _walk(node.get(sub), depth + 1)
        return
    for key, value in node.items():
        if key in ("@context",):
            continue
        if isinstance(value, dict | list):
            yield from _walk(value, depth + 1)


def _tree(body: bytes, content_type: str | None, url: str) -> Any:
    """The page as an lxml tree, decoded as the page scraper decodes it (the HTTP charset,
    else the page's own ``<meta charset>``, else a guess), not as lxml's Latin-1 default."""
    # extruct and bs4 only for kind: html sources, not on every fetch of plain feeds
    from bs4.dammit import UnicodeDammit
    from extruct.utils import parse_html

    m = _CHARSET.search(content_type or "")
    dammit = UnicodeDammit(body, [m.group(1)] if m else [], is_html=True)
    text = dammit.unicode_markup
    if text is None:
        text = body.decode("utf-8", errors="replace")
    try:
        return parse_html(text, encoding=None)
    except (ValueError, LookupError, TypeError) as exc:
        raise FetchError(
            f"could not read the page as HTML: {exc}", url=url, retryable=False
        ) from exc


def _json_ld_blocks(tree: Any) -> tuple[list[Any], int]:
    """The decoded JSON-LD blocks of a page, and how many could not be decoded."""
    data: list[Any] = []
    broken = 0
    for node in tree.xpath('//script[@type="application/ld+json"]'):
        text = node.xpath("string()")
        if not text.strip():
            continue
        try:
            data.append(json.loads(text, strict=False))
        except ValueError:
            try:  # CMSs wrap blocks in <!-- --> or start them with a // comment
                data.append(json.loads(_LEADING_COMMENT.sub("", text), strict=False))
            except ValueError:
                broken += 1
    return data, broken


def page_events(
    body: bytes,
    *,
    url: str,
    content_type: str | None = None,
    timezone: str | tzinfo = "UTC",
    places: Iterable[str] = (),
    summary_chars: int = 500,
) -> tuple[list[ParsedEntry], list[str]]:
    """The page's schema.org events as entries, and the problems met (broken blocks,
    events skipped); both empty for a page without structured data."""
    return _events_of(
        _tree(body, content_type, url),
        url=url,
        timezone=timezone,
        places=places,
        summary_chars=summary_chars,
    )


def _events_of(
    tree: Any, *, url: str, timezone: str | tzinfo, places: Iterable[str], summary_chars: int
) -> tuple[list[ParsedEntry], list[str]]:
    tz: tzinfo = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    problems: list[str] = []
    blocks, broken = _json_ld_blocks(tree)
    if broken:
        problems.append(f"{broken} JSON-LD block(s) were not valid JSON and were skipped")
    import extruct

    try:
        micro = extruct.extract(
            tree, base_url=url, syntaxes=["microdata"], uniform=True, errors="strict"
        ).get("microdata", [])
    except Exception as exc:  # extruct's microdata reader on a hostile page: its data only
        problems.append(f"the microdata could not be read ({type(exc).__name__})")
        micro = []
    matcher = PlaceMatcher(places)
    entries: list[ParsedEntry] = []
    seen: set[tuple[str, str, str]] = set()
    unnamed = cancelled = undated = 0
    for ev in _walk([blocks, micro]):
        if _is_cancelled(ev):
            cancelled += 1
            continue
        name = collapse(_first_text(ev.get("name")))
        if not name:
            unnamed += 1
            continue
        start_raw = _first_text(ev.get("startDate"))
        key = (name, start_raw, _first_text(ev.get("url")))
        if key in seen:  # the same event as JSON-LD and as microdata
            continue
        seen.add(key)
        entry = _entry(
            ev, name, start_raw, url=url, tz=tz, towns=matcher, summary_chars=summary_chars
        )
        if entry is None:
            undated += 1
            continue
        entries.append(entry)
        if len(entries) >= MAX_EVENTS:
            problems.append(f"more than {MAX_EVENTS} events on the page; the first were kept")
            break
    entries = distinct_event_guids(entries)
    if unnamed:
        problems.append(f"{unnamed} event(s) without a name skipped")
    if undated:
        problems.append(f"{undated} event(s) without a readable startDate skipped")
    del cancelled  # cancelled events are not a problem of the page
    return entries, problems


def parse_event_page(
    body: bytes,
    *,
    url: str,
    content_type: str | None = None,
    timezone: str | tzinfo = "UTC",
    places: Iterable[str] = (),
    summary_chars: int = 500,
) -> ParsedFeed:
    """A ``kind: html`` page without ``select:``: its schema.org events, or
    ``FetchError(retryable=False)`` when it has none (the message says so)."""
    if not body or not body.strip():
        raise FetchError(
            "empty response body where an HTML page was expected", url=url, retryable=False
        )
    tree = _tree(body, content_type, url)
    entries, problems = _events_of(
        tree, url=url, timezone=timezone, places=places, summary_chars=summary_chars
    )
    if not entries:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise FetchError(NO_EVENTS + detail, url=url, retryable=False)
    titles = tree.xpath("//title")
    title = collapse(titles[0].text_content()) if titles else ""
    langs = tree.xpath("//html/@lang")
    return ParsedFeed(
        title=title or None,
        link=clean_url(url, None),
        language=str(langs[0]).split("-")[0].lower() if langs else None,
        entries=entries,
        problem="; ".join(problems) or None,
        parser="schema.org",
    )


def distinct_event_guids(entries: list[ParsedEntry]) -> list[ParsedEntry]:
    """Events that share a guid (a theatre links every performance of a play to the play's
    page) get the start appended to it, so each performance is an item of its own; a guid
    used once stays as it is, so an event whose date moves keeps its identity."""
    count: dict[str, int] = {}
    for e in entries:
        if e.guid and e.event_start is not None:
            count[e.guid] = count.get(e.guid, 0) + 1
    return [
        replace(e, guid=f"{e.guid}#{e.event_start:%Y%m%dT%H%M%SZ}")
        if e.guid and e.event_start is not None and count[e.guid] > 1
        else e
        for e in entries
    ]


# --- one event ----------------------------------------------------------------------------


def _first(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _first_text(value: Any) -> str:
    v = _first(value)
    if isinstance(v, dict):  # {"@value": …} or {"@id": …}
        v = v.get("@value", v.get("@id", v.get("url")))
    return str(v).strip() if isinstance(v, str | int | float) else ""


def _is_cancelled(ev: dict[str, Any]) -> bool:
    status = _first_text(ev.get("eventStatus"))
    return _SCHEMA_PREFIX.sub("", status).lower() == "eventcancelled"


def _when(value: str, tz: tzinfo) -> tuple[datetime | None, bool]:
    """(start in UTC, whether it is a date without a time)."""
    v = value.strip()
    if not v:
        return None, False
    if _DATE_ONLY.match(v):
        try:
            d = date.fromisoformat(v)
        except ValueError:
            return None, False
        return datetime.combine(d, time(), tzinfo=tz).astimezone(UTC), True
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None, False
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.astimezone(UTC), False


def _entry(
    ev: dict[str, Any],
    name: str,
    start_raw: str,
    *,
    url: str,
    tz: tzinfo,
    towns: PlaceMatcher,
    summary_chars: int,
) -> ParsedEntry | None:
    start, all_day = _when(start_raw, tz)
    if start is None:
        return None
    end_raw = _first_text(ev.get("endDate"))
    end, end_is_date = _when(end_raw, tz)
    if all_day:
        if end is not None and end_is_date:
            # schema.org's endDate is the last day; the stored end is midnight after it.
            local = end.astimezone(tz).date() + timedelta(days=1)
            end = datetime.combine(local, time(), tzinfo=tz).astimezone(UTC)
        elif end is None:
            end = datetime.combine(
                start.astimezone(tz).date() + timedelta(days=1), time(), tzinfo=tz
            ).astimezone(UTC)
    if end is not None and end < start:
        end = None
    own = clean_url(_first_text(ev.get("url")) or None, url)
    link = own or clean_url(url, None)
    summary_html = description_html(_first_text(ev.get("description")), link or url)
    venue, town = _place(ev.get("location"), towns)
    image = _first(ev.get("image"))
    if isinstance(image, dict):
        image = image.get("url") or image.get("contentUrl")
    return ParsedEntry(
        guid=own or (_first_text(ev.get("@id")) or None),
        link=link,
        title=name,
        summary_html=summary_html,
        summary_text=to_text(summary_html, summary_chars),
        image_url=clean_url(image, url) if isinstance(image, str) else None,
        event_start=start,
        event_end=end,
        event_timezone=None,
        all_day=all_day,
        place_venue=venue,
        place_town=town,
    )


def _place(location: Any, towns: PlaceMatcher) -> tuple[str | None, str | None]:
    """(venue, town) of an event's ``location`` (the first physical one)."""
    items = location if isinstance(location, list) else [location]
    for loc in items:
        if isinstance(loc, str) and loc.strip():
            return split_place(loc, towns)
        if not isinstance(loc, dict) or "VirtualLocation" in _type_names(loc):
            continue
        venue = collapse(_first_text(loc.get("name"))) or None
        address = _first(loc.get("address"))
        town: str | None = None
        if isinstance(address, dict):
            town = collapse(_first_text(address.get("addressLocality"))) or None
            if town is not None and towns:
                known = towns.found(town)
                town = known[0] if known else town
            if town is None:
                parts = [_first_text(address.get(k)) for k in ("streetAddress", "postalCode")]
                _, town = split_place(", ".join(p for p in parts if p), towns)
        elif isinstance(address, str) and address.strip():
            a_venue, town = split_place(address, towns)
            venue = venue or a_venue
        if venue is not None and town is None:
            venue, town = split_place(venue, towns)
        if venue or town:
            return venue, town
    return None, None
