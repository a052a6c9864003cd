"""Pages without a feed (``kind: html`` sources) → :class:`ParsedFeed`, by CSS selectors.

BeautifulSoup is slow next to the feed path (a few ms per page) but these sources are few
(event listings, a city page or two), so clarity wins here. Selectors come from feeds.yaml
(:class:`~newsexchange.config.HtmlSelect`); ``"time@datetime"`` reads the ``datetime``
attribute of the first ``time`` element inside an item, ``"@href"`` an attribute of the item
element itself.

Dates on such pages are written for people: ISO timestamps, ``23.11.2026 klo 18.00``,
``23. marraskuuta 2026``, ``23 ноября 2026 г. в 18:00``, ``сегодня, 14:05``. They are read in
the source region's time zone (``timezone=``; UTC if not given) and returned in UTC.

An item is an event when the ``event_date`` selector reads a date: ``event_end`` is its end
(a date, or only a time on the same day, "21.00"; without it a range in the start's text,
"19.00–21.00" or "klo 18–20", gives the end) and ``place`` where it is ("Carelicum,
Joensuu": venue and town, the town from the region's ``places``). When a page with
selectors also carries schema.org events (:mod:`.structured`), the selectors win: they were
written for that page by someone who looked at it, and mixing two readings of one listing
would store each event twice.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from newsexchange.errors import FetchError
from newsexchange.ingest.clean import clean_url, collapse, sanitize_html, to_text
from newsexchange.ingest.model import ParsedEntry, ParsedFeed
from newsexchange.ingest.places import PlaceMatcher, split_place
from newsexchange.ingest.structured import distinct_event_guids

if TYPE_CHECKING:  # bs4 is imported where a kind: html source with select: is read
    from bs4 import BeautifulSoup, Tag

    from newsexchange.config import HtmlSelect

_FI_MONTHS = (
    "tammi", "helmi", "maalis", "huhti", "touko", "kesä", "heinä", "elo", "syys", "loka",
    "marras", "joulu",
)  # fmt: skip
_RU_MONTHS = (
    "январ", "феврал", "март", "апрел", "ма", "июн", "июл", "август", "сентябр", "октябр",
    "ноябр", "декабр",
)  # fmt: skip
_EN_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def _month(word: str) -> int | None:
    w = word.lower().strip(".")
    for i, stem in enumerate(_FI_MONTHS, 1):
        if w.startswith(stem + "k"):  # marraskuu, marraskuuta, marraskuussa …
            return i
    for i, stem in enumerate(_RU_MONTHS, 1):
        # "ма" is May: мая / май, but not март / марта (listed before it).
        if stem == "ма":
            if w in ("май", "мая", "мае"):
                return i
            continue
        if w.startswith(stem):
            return i
    if len(w) >= 3 and w[:3] in _EN_MONTHS:
        return _EN_MONTHS.index(w[:3]) + 1
    return None


# "18:00", "18.00", or "klo 18" (Finnish for "at 18 o'clock", minutes optional).
_TIME = re.compile(r"\b(?:klo|kello)\s*(\d{1,2})(?:[:.](\d{2}))?|(\d{1,2})[:.](\d{2})(?![\d.])")
_NUMERIC = re.compile(r"\b(\d{1,2})\.(\d{1,2})\.(\d{4}|\d{2})?(?!\d)")
_WORDY = re.compile(r"\b(\d{1,2})\.?\s+([^\W\d_]{3,})\.?(?:\s+(\d{4}))?", re.UNICODE)
_TODAY = ("сегодня", "tänään", "today")
_YESTERDAY = ("вчера", "eilen", "yesterday")


def _iso(value: str, tz: tzinfo) -> datetime | None:
    v = value.strip()
    if not re.match(r"^\d{4}-\d{2}-\d{2}", v):
        return None
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            dt = datetime.combine(date.fromisoformat(v[:10]), time())
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.astimezone(UTC)


def parse_human_date(
    value: str | None, *, tz: tzinfo = UTC, now: datetime | None = None
) -> datetime | None:
    """A date as written on a Finnish, Russian or English web page → aware UTC datetime.

    A date without a year is the next such day from ``now`` back at most 60 days (event
    listings show upcoming dates; news lists show recent ones). A time is optional
    (midnight local time when missing). None when nothing date-like is found, or the date
    cannot be represented (year 1 or 9999 at the edge of a time zone).
    """
    try:
        return _human_date(value, tz=tz, now=now)
    except (ValueError, OverflowError):
        return None


def _human_date(value: str | None, *, tz: tzinfo, now: datetime | None) -> datetime | None:
    if not value:
        return None
    text = collapse(value)
    dt = _iso(text, tz)
    if dt is not None:
        return dt
    now_local = (now or datetime.now(UTC)).astimezone(tz)
    low = text.lower()
    tm = _TIME.search(low)
    # A time of day is h:mm or h.mm not part of a d.m.yyyy date.
    clock = time()
    day: date | None = None
    if any(w in low for w in _TODAY):
        day = now_local.date()
    elif any(w in low for w in _YESTERDAY):
        day = now_local.date() - timedelta(days=1)
    year: int | None
    if day is None:
        m = _NUMERIC.search(low)
        if m:
            d, mo = int(m.group(1)), int(m.group(2))
            year = int(m.group(3)) if m.group(3) else None
            if year is not None and len(m.group(3)) == 2:
                year += 2000
            day = _make_day(d, mo, year, now_local.date())
            # Don't read "23.11." as a time after it.
            low = low[: m.start()] + " " + low[m.end() :]
            tm = _TIME.search(low)
        else:
            for m in _WORDY.finditer(low):
                mo_ = _month(m.group(2))
                if mo_ is None:
                    continue
                year = int(m.group(3)) if m.group(3) else None
                day = _make_day(int(m.group(1)), mo_, year, now_local.date())
                break
    if day is None:
        return None
    if tm is not None:
        if tm.group(1) is not None:
            hh, mi = int(tm.group(1)), int(tm.group(2) or 0)
        else:
            hh, mi = int(tm.group(3)), int(tm.group(4))
        if hh < 24 and mi < 60:
            clock = time(hh, mi)
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


def _make_day(d: int, mo: int, year: int | None, today: date) -> date | None:
    try:
        if year is not None:
            return date(year, mo, d)
        guess = date(today.year, mo, d)
    except ValueError:
        return None
    if guess < today - timedelta(days=60):  # "3.1." seen in December is next January
        try:
            guess = date(today.year + 1, mo, d)
        except ValueError:
            return None
    return guess


# --- selectors ----------------------------------------------------------------------------

_ATTR = re.compile(r"^(.*?)@([A-Za-z_:][-\w:.]*)$")


def _split(selector: str) -> tuple[str, str | None]:
    m = _ATTR.match(selector.strip())
    if m:
        return m.group(1).strip(), m.group(2)
    return selector.strip(), None


def _pick(item: Tag, selector: str | None) -> tuple[Tag | None, str | None]:
    """The element a selector names inside ``item`` and the value it reads (text or attr)."""
    if not selector:
        return None, None
    css, attr = _split(selector)
    el = item if not css else item.select_one(css)
    if el is None:
        return None, None
    if attr:
        value = el.get(attr)
        if isinstance(value, list):
            value = " ".join(value)
        return el, value
    return el, el.get_text(" ", strip=True)


def _soup(body: bytes, content_type: str | None) -> BeautifulSoup:
    """The page, read as HTML in its declared charset, without scripts and styles."""
    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning  # only kind: html sources need it

    m = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", content_type or "", re.IGNORECASE)
    with warnings.catch_warnings():
        # XHTML pages start with <?xml …?>; reading them as HTML is what we want.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(body, "lxml", from_encoding=m.group(1) if m else None)
    for bad in soup(["script", "style", "noscript", "template"]):
        bad.decompose()
    return soup


def _matched_items(soup: BeautifulSoup, selector: str, url: str) -> list[Tag]:
    """What the item selector matches; FetchError when it is bad or matches nothing."""
    try:
        items = soup.select(selector)
    except Exception as exc:  # soupsieve raises its own SelectorSyntaxError
        raise FetchError(
            f"bad item selector {selector!r}: {exc}", url=url, retryable=False
        ) from exc
    if not items:
        raise FetchError(
            f"the item selector {selector!r} matched nothing on the page "
            "(expected at least one item; has the site changed its layout?)",
            url=url,
            retryable=False,
        )
    return list(items)


def _page_entry(
    item: Tag,
    select: HtmlSelect,
    base: str,
    *,
    tz: tzinfo,
    now: datetime | None,
    summary_chars: int,
    towns: PlaceMatcher | None = None,
) -> ParsedEntry | None:
    """One matched item as an entry; None when it has no title (it is skipped)."""
    _, title = _pick(item, select.title)
    if not title:
        return None
    _, href = _pick(item, select.link)
    if href is None and item.name == "a":
        href = item.get("href")  # type: ignore[assignment]
    link = clean_url(href, base) if isinstance(href, str) else None
    _, date_text = _pick(item, select.date)
    _, event_text = _pick(item, select.event_date)
    summary_html = ""
    if select.summary:
        css, attr = _split(select.summary)
        if attr:
            _, value = _pick(item, select.summary)
            summary_html = sanitize_html(value or "", link or base)
        else:
            els = item.select(css) if css else [item]
            summary_html = sanitize_html("".join(str(e) for e in els), link or base)
    published = parse_human_date(date_text, tz=tz, now=now)
    start = parse_human_date(event_text, tz=tz, now=now)
    end: datetime | None = None
    if start is not None:
        _, end_text = _pick(item, select.event_end)
        end = event_end(start, end_text, event_text, tz=tz, now=now)
    _, place_text = _pick(item, select.place)
    venue, town = split_place(place_text, towns)
    return ParsedEntry(
        guid=link,
        link=link,
        title=collapse(title),
        summary_html=summary_html,
        summary_text=to_text(summary_html, summary_chars),
        published_at=published,
        event_start=start,
        event_end=end,
        place_venue=venue,
        place_town=town,
    )


# "19.00–21.00", "18:00 - 20:00", "klo 18–20": a time, a dash, a time (the end).
_TIME_RANGE = re.compile(
    r"(?:\b(?:klo|kello)\s*)?\b\d{1,2}(?:[:.]\d{2})?\s*[-–—]\s*(?:klo\s*)?"
    r"(\d{1,2})(?:[:.](\d{2}))?(?![\d.:])"
)


def event_end(
    start: datetime,
    end_text: str | None,
    start_text: str | None,
    *,
    tz: tzinfo = UTC,
    now: datetime | None = None,
) -> datetime | None:
    """When an event on a page ends: ``end_text`` (the ``event_end`` selector's value) read
    as a date, or as a time only ("21.00", "klo 20") on the start's day; without it, the end
    of a time range in the start's own text ("19.00–21.00", "klo 18–20"). A last day without
    a time ends at midnight after it; a time before the start is the next day's (a night
    event, "22–02"); None when no end is given.
    """
    if end_text and end_text.strip():
        low = collapse(end_text).lower()
        if _NUMERIC.search(low) or any(_month(w) for w in low.split()) or _iso(low, tz):
            end = parse_human_date(end_text, tz=tz, now=now)
            if end is not None and _TIME.search(_NUMERIC.sub(" ", low)) is None:
                # A last day without a time ("6.12.2026"): the event runs to its end.
                local = end.astimezone(tz).date() + timedelta(days=1)
                end = datetime.combine(local, time(), tzinfo=tz).astimezone(UTC)
            return end if end is not None and end >= start else None
        tm = _TIME.search(low)
        if tm is None:
            return None
        if tm.group(1) is not None:
            return _on_start_day(start, int(tm.group(1)), int(tm.group(2) or 0), tz)
        return _on_start_day(start, int(tm.group(3)), int(tm.group(4)), tz)
    if start_text and _iso(start_text, tz) is None:  # "2026-12-12" is no range
        m = _TIME_RANGE.search(collapse(start_text).lower())
        if m:
            return _on_start_day(start, int(m.group(1)), int(m.group(2) or 0), tz)
    return None


def _on_start_day(start: datetime, hh: int, mi: int, tz: tzinfo) -> datetime | None:
    if hh > 24 or mi > 59:
        return None
    day = start.astimezone(tz).date()
    if hh == 24:  # "18–24"
        day, hh = day + timedelta(days=1), 0
    end = datetime.combine(day, time(hh, mi), tzinfo=tz).astimezone(UTC)
    if end <= start:
        end = datetime.combine(day + timedelta(days=1), time(hh, mi), tzinfo=tz).astimezone(UTC)
    return end


def parse_html_page(
    body: bytes,
    *,
    url: str,
    select: HtmlSelect,
    content_type: str | None = None,
    summary_chars: int = 500,
    timezone: str | tzinfo | None = None,
    now: datetime | None = None,
    places: Iterable[str] = (),
) -> ParsedFeed:
    """Read the items of an HTML page with the source's CSS selectors.

    ``timezone`` is the source region's zone, for dates written without one; ``places`` its
    place names (the town of an event's ``place``). Raises
    ``FetchError(retryable=False)`` when the body is empty or the item selector matches
    nothing (usually: the site changed its layout; the message names the selector).
    """
    if not body or not body.strip():
        raise FetchError(
            "empty response body where an HTML page was expected", url=url, retryable=False
        )
    from bs4 import Tag

    tz: tzinfo = ZoneInfo(timezone) if isinstance(timezone, str) else (timezone or UTC)
    soup = _soup(body, content_type)
    base = url
    base_tag = soup.find("base", href=True)
    if isinstance(base_tag, Tag):
        base = clean_url(str(base_tag["href"]), url) or url
    items = _matched_items(soup, select.item, url)
    towns = PlaceMatcher(places)
    entries: list[ParsedEntry] = []
    skipped = 0
    for item in items:
        entry = _page_entry(
            item, select, base, tz=tz, now=now, summary_chars=summary_chars, towns=towns
        )
        if entry is None:
            skipped += 1
        else:
            entries.append(entry)
    entries = distinct_event_guids(entries)
    html_tag = soup.find("html")
    lang = html_tag.get("lang") if isinstance(html_tag, Tag) else None
    page_title = soup.title.get_text(" ", strip=True) if soup.title else None
    return ParsedFeed(
        title=collapse(page_title) if page_title else None,
        link=clean_url(url, None),
        language=str(lang).split("-")[0].lower() if lang else None,
        entries=entries,
        problem=f"{skipped} of {len(items)} items had no title and were skipped"
        if skipped
        else None,
        parser="html",
    )
