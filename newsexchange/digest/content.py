"""What a reader sees of a digest, as plain data: the text each item shows in the digest's
language, and the content every rendering (mail, "view online", preview) is made from.

:func:`digest_content` returns a JSON-able dict (``schema`` = :data:`CONTENT_SCHEMA`,
described by :class:`DigestContent`). When the approval step freezes a digest it stores
exactly that dict in ``digest.frozen`` (with the editors' ``intro`` added), and
:func:`shown_content` hands the frozen copy to rendering from then on, so what was approved
is what is sent even if a translation changes later. :func:`content_hash` fingerprints it.

The build step (:mod:`newsexchange.digest.build`) and rendering
(:mod:`newsexchange.digest.render`) both read this module; it reads neither of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict, cast

from newsexchange.config import Config
from newsexchange.db import Digest, Item, Session
from newsexchange.db.queries import digests as queries

__all__ = [
    "CONTENT_SCHEMA",
    "ContentItem",
    "DigestContent",
    "content_hash",
    "digest_content",
    "item_text",
    "shown_content",
    "text_hash",
    "translated_by",
]

CONTENT_SCHEMA = "newsexchange.digest-content/1"


class ContentItem(TypedDict):
    """One included item, as :func:`digest_content` lists it (times in ISO 8601, UTC)."""

    position: int
    section: str  # news | events
    item_id: int
    title: str
    summary_html: str  # sanitized at ingestion, "" when only plain text exists
    summary_text: str
    translated: bool
    same_language: bool
    translated_by: str | None
    original_title: str
    original_language: str
    source_id: str
    region: str
    source_name: str
    link: str | None  # http(s) only
    published_at: str
    # An event's when and where (None / False when the item is not an event). Content frozen
    # before these existed has only "event_at" (the start); rendering reads either.
    event_start: str | None
    event_end: str | None
    event_timezone: str | None  # IANA zone the source gave, else None (the region's zone)
    all_day: bool
    place: ContentPlace | None
    also_in: list[str]  # the other sources' names carrying the same story


class ContentPlace(TypedDict):
    venue: str | None
    town: str | None


class ContentPeriod(TypedDict):
    start: str
    end: str


class DigestContent(TypedDict):
    """Everything a reader sees of a digest (:data:`CONTENT_SCHEMA`)."""

    schema: str
    digest_id: int
    exchange: str
    language: str
    version: int
    period: ContentPeriod
    items: list[ContentItem]
    intro: NotRequired[dict[str, str]]  # {language: text}, added by the approval desk


# -- the text an item shows in a language ------------------------------------------------------


def item_text(item: Item, language: str) -> tuple[str, str, str, bool]:
    """(title, summary_html, summary_text, translated) of ``item`` in ``language``.

    An item already in that language shows itself. Otherwise a finished translation with a
    title is needed; without one the original is returned with ``translated=False``.
    ``summary_html`` is sanitized HTML (ingestion sanitizes items; the translation step keeps
    that property), or "" when only plain text exists.
    """
    if item.language == language:
        return item.title, item.summary_html, item.summary_text, True
    for tr in item.translations:
        if tr.language == language and tr.status == "done" and tr.title:
            return tr.title, tr.summary_html or "", tr.summary_text or "", True
    return item.title, item.summary_html, item.summary_text, False


def translated_by(item: Item, language: str) -> str | None:
    """Who produced the text shown in ``language``: "original" (the item's own language), a
    provider name, "memory", "editor"; None when the item is untranslated."""
    if item.language == language:
        return "original"
    for tr in item.translations:
        if tr.language == language and tr.status == "done" and tr.title:
            return tr.provider or "unknown"
    return None


def text_hash(item: Item, language: str) -> str:
    """A short fingerprint of what ``item`` shows in ``language`` (text and link): a build
    keeps it on the item's ``digest_items`` row, so a finished translation changes the
    digest."""
    title, html, text, translated = item_text(item, language)
    blob = json.dumps([title, html, text, translated, item.link], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- the content -------------------------------------------------------------------------------


def _source_name(config: Config, source_id: str) -> str:
    for s in config.sources:
        if s.id == source_id:
            return s.display_name
    return source_id


def _http_link(url: str | None) -> str | None:
    """Only http(s) links reach a mail: a feed's ``javascript:`` or ``data:`` link (cleaned at
    ingestion already) is dropped here once more rather than trusted."""
    if not url:
        return None
    scheme = url.split(":", 1)[0].strip().lower()
    return url if scheme in ("http", "https") and "://" in url else None


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def _content_item(
    config: Config, item: Item, position: int, section: str, language: str, also: list[str]
) -> ContentItem:
    title, summary_html, summary_text, translated = item_text(item, language)
    return {
        "position": position,
        "section": section,
        "item_id": item.id,
        "title": title,
        "summary_html": summary_html,
        "summary_text": summary_text,
        "translated": translated,
        "same_language": item.language == language,
        "translated_by": translated_by(item, language),
        "original_title": item.title,
        "original_language": item.language,
        "source_id": item.source_id,
        "region": item.region,
        "source_name": _source_name(config, item.source_id),
        "link": _http_link(item.link),
        "published_at": item.published_at.astimezone(UTC).isoformat(),
        "event_start": _iso(item.event_start),
        "event_end": _iso(item.event_end),
        "event_timezone": item.event_timezone,
        "all_day": bool(item.all_day),
        "place": {"venue": item.place_venue, "town": item.place_town}
        if (item.place_venue or item.place_town)
        else None,
        "also_in": also,
    }


def typed_content(session: Session, config: Config, digest: Digest) -> DigestContent:
    """:func:`digest_content`, typed."""
    # Only the included rows: a large period's left-out verdicts are none of a reader's
    # business (show --format html read them all, 3–6 s at 20,000, issue 16).
    entries = queries.included_entries(session, digest.id)
    names_by_item: dict[int, str] = {}
    dup_ids = [i for e in entries for i in e.reason.get("duplicates", [])]
    if dup_ids:
        for it in queries.items_by_id(session, dup_ids):
            names_by_item[it.id] = _source_name(config, it.source_id)
    items: list[ContentItem] = []
    for e in entries:
        item = e.item
        also = sorted(
            {names_by_item[i] for i in e.reason.get("duplicates", []) if i in names_by_item}
            - {_source_name(config, item.source_id)}
        )
        items.append(_content_item(config, item, e.position, e.section, digest.language, also))
    return {
        "schema": CONTENT_SCHEMA,
        "digest_id": digest.id,
        "exchange": digest.exchange_id,
        "language": digest.language,
        "version": digest.version,
        "period": {"start": digest.period_start.isoformat(), "end": digest.period_end.isoformat()},
        "items": items,
    }


def digest_content(session: Session, config: Config, digest: Digest) -> dict[str, Any]:
    """Everything a reader sees of ``digest``, as plain JSON-able data (see module doc):
    a :class:`DigestContent`, as the dict the approval step extends and freezes."""
    return cast(dict[str, Any], typed_content(session, config, digest))


def shown_content(session: Session, config: Config, digest: Digest) -> Mapping[str, Any]:
    """What rendering shows of ``digest``: its frozen content once approved, else the live
    :func:`digest_content`."""
    if isinstance(digest.frozen, dict) and digest.frozen.get("schema") == CONTENT_SCHEMA:
        return digest.frozen
    return digest_content(session, config, digest)


def content_hash(content: Mapping[str, Any]) -> str:
    """A stable hash of :func:`digest_content` output (for ``digest.content_hash``)."""
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
