"""The one entry builder every parser ends in (:func:`build_entry`), so cleaning, link, guid and
date rules are the same whichever parser read the bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from html import unescape as html_unescape

from newsexchange.ingest.clean import (
    clean_url,
    collapse,
    sanitize_storable_html,
    text_of_safe_html,
    to_text,
)
from newsexchange.ingest.model import ParsedEntry
from newsexchange.textclean import UNSTORABLE, strip_unstorable

# --- the shared entry builder -------------------------------------------------------------

_LOOKS_HTML = re.compile(r"<[A-Za-z/!]|&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z]+\d*);")


def plain(value: str | None) -> str:
    """Plain text of a title/author that may carry markup or entities."""
    if not value:
        return ""
    value = strip_unstorable(value)
    if _LOOKS_HTML.search(value):
        return to_text(value, 10_000)
    return collapse(value)


@dataclass
class RawEntry:
    """What either parser found for one item, before cleaning (strings as in the feed)."""

    guid: str | None = None
    link: str | None = None
    title: str | None = None
    summary: str | None = None
    content: str | None = None
    author: str | None = None
    image: str | None = None
    published: datetime | None = None
    updated: datetime | None = None


#: Summary HTML longer than this is cut (at a tag boundary) before cleaning. Many Russian
#: feeds carry whole articles in <description>; a digest needs the lead, and cleaning cost
#: grows with length (about 8 µs per 100 characters).
SUMMARY_HTML_MAX_CHARS = 6000


def _bounded(html: str) -> str:
    if len(html) <= SUMMARY_HTML_MAX_CHARS:
        return html
    cut = html.rfind(">", 0, SUMMARY_HTML_MAX_CHARS)
    # Past the last complete tag; the cleaner closes whatever was left open.
    return html[: cut + 1] if cut > SUMMARY_HTML_MAX_CHARS // 2 else html[:SUMMARY_HTML_MAX_CHARS]


_IMG_SRC = re.compile(r'<img src="(https?://[^"]+)"')


def _first_image(safe_html: str) -> str | None:
    """The first picture in the cleaned summary (tracking pixels are already gone), for
    items that name no image of their own: the digest shows one per story."""
    if "<img" not in safe_html:
        return None
    m = _IMG_SRC.search(safe_html)
    return html_unescape(m.group(1)) if m else None


_FIELDS = ("guid", "link", "title", "summary", "content", "author", "image")


def _unstorable_gone(raw: RawEntry) -> RawEntry:
    """``raw`` without unstorable characters (textclean), before the cleaners see it: a lone
    surrogate (JSON Feed's "\ud800") cannot even be handed to nh3, which is Rust. One
    search over all fields first: nearly every entry has none."""
    values = [getattr(raw, name) for name in _FIELDS]
    if not UNSTORABLE.search("\n".join(filter(None, values))):
        return raw
    for name, value in zip(_FIELDS, values, strict=True):
        if value and UNSTORABLE.search(value):
            setattr(raw, name, UNSTORABLE.sub("", value))
    return raw


def build_entry(raw: RawEntry, *, base: str, summary_chars: int) -> ParsedEntry:
    raw = _unstorable_gone(raw)
    link = clean_url(raw.link, base)
    # Relative URLs in a summary resolve against the document's URL, as feedparser's do.
    summary_html = sanitize_storable_html(_bounded(raw.summary or raw.content or ""), base)
    guid = collapse(raw.guid) if raw.guid else None
    return ParsedEntry(
        guid=guid or None,
        link=link,
        title=plain(raw.title),
        summary_html=summary_html,
        summary_text=text_of_safe_html(summary_html, summary_chars),
        author=plain(raw.author) or None,
        image_url=clean_url(raw.image, base) or _first_image(summary_html),
        published_at=raw.published or raw.updated,
        updated_at=raw.updated,
    )
