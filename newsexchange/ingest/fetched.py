"""What passes from the fetchers to the writer: one source's fetch (:class:`Fetched`), what a
worker process already did with its body (:class:`Precomputed`, by :func:`prepare_body`), and
:func:`parse_body`, the one way a body becomes a :class:`~.model.ParsedFeed` (in the writer
thread or a worker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from newsexchange.errors import FetchError
from newsexchange.ingest.clean import scrub_feed
from newsexchange.ingest.decide import content_hash, detect_text
from newsexchange.ingest.ical import parse_calendar
from newsexchange.ingest.langdetect import detect_language
from newsexchange.ingest.model import ParsedFeed
from newsexchange.ingest.parse import parse_feed
from newsexchange.ingest.scrape import parse_html_page
from newsexchange.ingest.stories import fingerprint
from newsexchange.ingest.structured import parse_event_page

if TYPE_CHECKING:  # annotations only: a parse worker imports this module, and none of these
    from newsexchange.config import HtmlSelect, SourceSettings
    from newsexchange.ingest.decide import SourceState
    from newsexchange.ingest.fetch import FetchResult
    from newsexchange.ingest.fulltext import Pages

__all__ = ["Fetched", "Precomputed", "parse_body", "prepare_body"]


@dataclass
class Fetched:
    source: SourceSettings
    state: SourceState
    result: FetchResult | None
    error: FetchError | None
    pre: Precomputed | None = None  # parsed in a worker process (large runs)
    pages: Pages | None = None  # fulltext: true sources: the article pages read


@dataclass
class Precomputed:
    """What a worker process did for one body: the parsed feed (or why not), and the
    fingerprints and languages of the entries not already stored unchanged."""

    feed: ParsedFeed | None
    error: str | None = None
    fingerprints: dict[tuple[str, str], str] = field(default_factory=dict)
    languages: dict[str, str | None] = field(default_factory=dict)


def parse_body(
    kind: str,
    select_: HtmlSelect | None,
    body: bytes,
    *,
    url: str,
    content_type: str | None,
    summary_chars: int,
    timezone: str,
    now: datetime,
    event_window_days: int = 90,
    places: tuple[str, ...] = (),
) -> ParsedFeed:
    """A feed (RSS, Atom, RDF, JSON Feed); for ``kind: html`` a page read with its
    selectors, or without ``select:`` its schema.org events; for ``kind: ical`` a calendar's
    occurrences in the next ``event_window_days``. ``timezone`` and ``places`` are the source
    region's (dates without a zone, an event's town)."""
    if kind == "ical":
        cal = parse_calendar(
            body,
            url=url,
            timezone=timezone,
            places=places,
            window_days=event_window_days,
            summary_chars=summary_chars,
            content_type=content_type,
            now=now,
        )
        return scrub_feed(cal)
    if kind == "html" and select_ is None:
        page = parse_event_page(
            body,
            url=url,
            content_type=content_type,
            timezone=timezone,
            places=places,
            summary_chars=summary_chars,
        )
        return scrub_feed(page)
    if kind == "html":
        assert select_ is not None
        page = parse_html_page(
            body,
            url=url,
            select=select_,
            content_type=content_type,
            summary_chars=summary_chars,
            # A page's dates rarely carry a zone: they are the region's local time.
            timezone=timezone,
            now=now,
            places=places,
        )
        # parse_feed scrubs its own output; the page scraper's goes through the same rules.
        return scrub_feed(page)
    return parse_feed(body, url=url, content_type=content_type, summary_chars=summary_chars)


def prepare_body(
    kind: str,
    select_: HtmlSelect | None,
    body: bytes,
    url: str,
    content_type: str | None,
    summary_chars: int,
    timezone: str,
    now: datetime,
    known: frozenset[str],
    event_window_days: int = 90,
    places: tuple[str, ...] = (),
) -> Precomputed:
    """What a parse worker process does for one body: parse, then the CPU-heavy per-entry
    work for every entry whose content is not already stored (``known`` content hashes of the
    source). Here, not in :mod:`.pipeline`, so that a worker imports the parsers without the
    writer, the database and the HTTP client (issue 16: what a worker loads)."""
    try:
        feed = parse_body(
            kind,
            select_,
            body,
            url=url,
            content_type=content_type,
            summary_chars=summary_chars,
            timezone=timezone,
            now=now,
            event_window_days=event_window_days,
            places=places,
        )
    except FetchError as exc:
        return Precomputed(None, exc.message)
    except Exception as exc:  # a parser bug: this source's error only
        return Precomputed(None, f"could not parse: {type(exc).__name__}: {exc}")
    pre = Precomputed(feed)
    for e in feed.entries:
        if content_hash(e) in known:
            continue
        pre.fingerprints[(e.title, e.summary_text)] = fingerprint(e.title, e.summary_text)
        text = detect_text(e)
        if text is not None:
            pre.languages[text] = detect_language(text)
    return pre
