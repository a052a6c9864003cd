"""The reference parser: feedparser, for everything the fast path declines."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import feedparser

from newsexchange.ingest.clean import clean_url, collapse
from newsexchange.ingest.dates import lenient_date, struct_to_dt
from newsexchange.ingest.model import ParsedFeed
from newsexchange.ingest.parsers.entry import RawEntry, build_entry, plain

# --- feedparser path ----------------------------------------------------------------------


def _fp_date(entry: Mapping[str, Any], key: str) -> datetime | None:
    # dict.get, not entry.get: FeedParserDict maps a missing "updated" to "published".
    st = dict.get(entry, f"{key}_parsed")  # type: ignore[call-overload]
    if st:
        return struct_to_dt(st)
    value = dict.get(entry, key)  # type: ignore[call-overload]
    return lenient_date(value) if isinstance(value, str) and value.strip() else None


def _fp_image(entry: Mapping[str, Any]) -> str | None:
    for enc in entry.get("enclosures") or ():
        if (enc.get("type") or "").startswith("image/") and enc.get("href"):
            return str(enc["href"])
    for th in entry.get("media_thumbnail") or ():
        if th.get("url"):
            return str(th["url"])
    for mc in entry.get("media_content") or ():
        if mc.get("url") and (
            mc.get("medium") == "image" or (mc.get("type") or "").startswith("image/")
        ):
            return str(mc["url"])
    return None


def _fp_summary(entry: Mapping[str, Any]) -> tuple[str | None, str | None]:
    summary = entry.get("summary")
    content = None
    for c in entry.get("content") or ():
        if c.get("value"):
            content = c["value"]
            break
    # feedparser copies content into summary when an entry has no summary of its own.
    return (summary or None), content


def run_feedparser(body: bytes, url: str, content_type: str | None, summary_chars: int) -> Any:
    # Without a Content-Type feedparser flags every feed as bozo; what it would default to
    # for a feed fetched over HTTP is application/xml.
    headers = {"content-location": url, "content-type": content_type or "application/xml"}
    # Our own allowlist (nh3) sanitizes and absolutizes on both paths. feedparser's sanitizer
    # and its relative-URI rewriting of embedded HTML re-serialize the markup (attributes
    # sorted, tags normalized), which would only cost time and make the two paths disagree.
    # Links and ids are still resolved against xml:base by feedparser itself.
    return feedparser.parse(
        body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False
    )


def from_feedparser(result: Any, url: str, summary_chars: int, note: str | None) -> ParsedFeed:
    feed = result.get("feed", {})
    entries = []
    for e in result.get("entries", []):
        summary, content = _fp_summary(e)
        raw = RawEntry(
            guid=e.get("id"),
            link=e.get("link"),
            title=e.get("title"),
            summary=summary,
            content=content,
            author=e.get("author"),
            image=_fp_image(e),
            published=_fp_date(e, "published"),
            updated=_fp_date(e, "updated"),
        )
        entries.append(build_entry(raw, base=url, summary_chars=summary_chars))
    problems = []
    if note:
        problems.append(note)
    if result.get("bozo"):
        exc = result.get("bozo_exception")
        problems.append(f"{type(exc).__name__}: {exc}" if exc else "feed is not well-formed")
    language = feed.get("language")
    return ParsedFeed(
        title=plain(feed.get("title")) or None,
        link=clean_url(feed.get("link"), url),
        language=collapse(language) if isinstance(language, str) and language.strip() else None,
        entries=entries,
        problem="; ".join(problems) or None,
        parser="feedparser",
    )
