"""JSON Feed 1.0/1.1, read directly (feedparser 6.0 has no JSON support)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape as html_escape
from typing import Any

from newsexchange.errors import FetchError
from newsexchange.ingest.clean import clean_url, collapse
from newsexchange.ingest.dates import parse_date
from newsexchange.ingest.model import ParsedFeed
from newsexchange.ingest.parsers.entry import RawEntry, build_entry

# --- JSON Feed ----------------------------------------------------------------------------


def _json_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # ids are strings by the spec; some feeds write numbers
    return None


def _json_author(item: Mapping[str, Any]) -> str | None:
    authors = item.get("authors")
    if isinstance(authors, list) and authors and isinstance(authors[0], dict):
        return _json_str(authors[0].get("name"))
    author = item.get("author")  # JSON Feed 1.0
    return _json_str(author.get("name")) if isinstance(author, dict) else None


def parse_json_feed(body: bytes, url: str, summary_chars: int) -> ParsedFeed:
    """JSON Feed 1.0/1.1 (jsonfeed.org), read directly: feedparser 6.0 has no JSON support.

    ``summary`` and ``content_text`` are plain text by the spec (escaped into HTML);
    ``content_html`` is HTML and is sanitized like any feed's.
    """
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FetchError(f"not a feed: invalid JSON ({exc})", url=url, retryable=False) from exc
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise FetchError(
            'JSON without an "items" list where a JSON Feed was expected',
            url=url,
            retryable=False,
        )
    raws = []
    skipped = 0
    for item in items:
        if not isinstance(item, dict):
            skipped += 1
            continue
        summary = _json_str(item.get("summary"))
        text = _json_str(item.get("content_text"))
        raws.append(
            RawEntry(
                guid=_json_str(item.get("id")),
                link=_json_str(item.get("url")) or _json_str(item.get("external_url")),
                title=html_escape(_json_str(item.get("title")) or ""),
                summary=html_escape(summary) if summary else None,
                content=_json_str(item.get("content_html"))
                or (html_escape(text) if text else None),
                author=_json_author(item),
                image=_json_str(item.get("image")) or _json_str(item.get("banner_image")),
                published=parse_date(_json_str(item.get("date_published"))),
                updated=parse_date(_json_str(item.get("date_modified"))),
            )
        )
    language = _json_str(doc.get("language"))
    return ParsedFeed(
        title=collapse(_json_str(doc.get("title")) or "") or None,
        link=clean_url(_json_str(doc.get("home_page_url")), url),
        language=language.strip() if language and language.strip() else None,
        entries=[build_entry(r, base=url, summary_chars=summary_chars) for r in raws],
        problem=f"{skipped} items were not objects and were skipped" if skipped else None,
        parser="json",
    )
