"""What a fetch changes, decided without I/O (compare lemon24/reader's ``_update.Decider``:
"does not interact with any dependencies, only processes data").

Given the items already stored for a source and the entries just parsed, :class:`Decider`
says which are new, which changed (updated in place) and which are unchanged; the
``after_success`` / ``after_failure`` functions compute a source's health (and ``is_due``
whether it is fetched at all). Near-identical stories are linked by :mod:`.stories`. The fetch
step (``step.py``, ``pipeline.py``, ``writer.py``) does the reading and writing around these.

Identity of an item within its source, in order of preference:

1. its ``guid`` (RSS guid / Atom id);
2. its canonical link (absolute, tracking parameters already stripped by the parser), unless
   several entries of the same feed share that link (event listings that all point at one
   page): then those fall through to
3. a hash of its content (title, text, link).

An item first stored by its link is still recognised when the feed later adds guids, and the
other way round, so a feed changing its habits does not duplicate its archive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from newsexchange.common.retry import Backoff
from newsexchange.ingest.model import ParsedEntry

IDENTITY_MAX = 255  # the column's width; longer keys are hashed
#: A date further in the future than this is a feed's mistake (or an event's date misused as
#: the publication date); such items would sit on top of every digest, so they are clamped.
FUTURE_SLACK = timedelta(hours=1)
#: Text shorter than this is not worth a language guess (a headline of two words fools every
#: detector).
MIN_DETECT_CHARS = 40


# -- items -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredItem:
    """The parts of a stored item the decision needs."""

    id: int
    identity: str
    guid: str | None
    link: str | None
    content_hash: str
    published_at: datetime


@dataclass(frozen=True)
class ItemValues:
    """Column values for a new or changed item (the step adds source, region, times)."""

    identity: str
    guid: str | None
    link: str | None
    title: str
    summary_html: str
    summary_text: str
    author: str | None
    image_url: str | None
    published_at: datetime
    date_from_feed: bool
    event_start: datetime | None
    event_end: datetime | None
    event_timezone: str | None
    all_day: bool
    place_venue: str | None
    place_town: str | None
    content_hash: str
    fingerprint: str | None
    detected_language: str | None
    language_mismatch: bool

    def row(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "guid": self.guid,
            "link": self.link,
            "title": self.title,
            "summary_html": self.summary_html,
            "summary_text": self.summary_text,
            "author": self.author,
            "image_url": self.image_url,
            "published_at": self.published_at,
            "date_from_feed": self.date_from_feed,
            "event_start": self.event_start,
            "event_end": self.event_end,
            "event_timezone": self.event_timezone,
            "all_day": self.all_day,
            "place_venue": self.place_venue,
            "place_town": self.place_town,
            "content_hash": self.content_hash,
            "fingerprint": self.fingerprint,
            "detected_language": self.detected_language,
            "language_mismatch": self.language_mismatch,
        }


@dataclass
class Decision:
    new: list[ItemValues] = field(default_factory=list)
    changed: list[tuple[int, ItemValues]] = field(default_factory=list)  # (stored id, values)
    unchanged: int = 0
    repeated: int = 0  # entries that repeat an earlier entry of the same feed


def content_hash(entry: ParsedEntry) -> str:
    """What makes an item "changed": its visible content, not its dates (many feeds bump
    pubDate on every request, which would otherwise churn every item on every fetch)."""
    parts: tuple[str, ...] = (
        entry.title,
        entry.summary_html,
        entry.link or "",
        entry.author or "",
        entry.image_url or "",
        entry.event_start.isoformat() if entry.event_start else "",
    )
    # An event's end and place count too; they are appended only when present, so the hash
    # of everything that is not such an event is what it was before events had them.
    extra = (
        entry.event_end.isoformat() if entry.event_end else "",
        entry.event_timezone or "",
        "all-day" if entry.all_day else "",
        entry.place_venue or "",
        entry.place_town or "",
    )
    if any(extra):
        parts += extra
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _bounded(key: str) -> str:
    if len(key) <= IDENTITY_MAX:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def identities(entries: Sequence[ParsedEntry], hashes: Sequence[str]) -> list[str]:
    """The identity of each entry (see the module docstring)."""
    link_count: dict[str, int] = {}
    for e in entries:
        if not (e.guid or "").strip() and e.link:
            link_count[e.link] = link_count.get(e.link, 0) + 1
    out: list[str] = []
    for e, h in zip(entries, hashes, strict=True):
        guid = (e.guid or "").strip()
        if guid:
            out.append(_bounded(guid))
        elif e.link and link_count.get(e.link, 0) == 1:
            out.append(_bounded(e.link))
        else:
            out.append("hash:" + h[:40])
    return out


def detect_text(entry: ParsedEntry) -> str | None:
    """The text whose language is checked (None when too short to tell)."""
    text = f"{entry.title}. {entry.summary_text}".strip()
    return text if len(text) >= MIN_DETECT_CHARS else None


def lookup_keys(entries: Sequence[ParsedEntry]) -> tuple[set[str], set[str]]:
    """Identities and links to read stored items by (so the step never loads a whole archive)."""
    hashes = [content_hash(e) for e in entries]
    return set(identities(entries, hashes)), {e.link for e in entries if e.link}


class Decider:
    """New / changed / unchanged for one source's parsed entries. No I/O.

    ``detect`` (text → language code or None) and ``fingerprint`` (title, text → SimHash) are
    pure functions passed in, and run only for new or changed entries.
    """

    def __init__(
        self,
        *,
        declared_language: str,
        now: datetime,
        detect: Callable[[str], str | None],
        fingerprint: Callable[[str, str], str],
    ) -> None:
        self.declared_language = declared_language
        self.now = now
        self.detect = detect
        self.fingerprint = fingerprint

    def decide(self, stored: Iterable[StoredItem], entries: Sequence[ParsedEntry]) -> Decision:
        by_identity: dict[str, StoredItem] = {}
        by_link: dict[str, list[StoredItem]] = {}
        for s in stored:
            by_identity[s.identity] = s
            if s.link:
                by_link.setdefault(s.link, []).append(s)
        hashes = [content_hash(e) for e in entries]
        keys = identities(entries, hashes)
        decision = Decision()
        seen: set[str] = set()
        matched: set[int] = set()
        for entry, h, key in zip(entries, hashes, keys, strict=True):
            if key in seen:
                decision.repeated += 1
                continue
            seen.add(key)
            old = by_identity.get(key) or self._by_link(entry, by_link)
            if old is not None and old.id in matched:
                decision.repeated += 1  # two entries of this feed resolve to one stored item
                continue
            if old is None:
                decision.new.append(self._values(entry, key, h, None))
                continue
            matched.add(old.id)
            if old.content_hash == h:
                decision.unchanged += 1
            else:
                # Keep the stored identity: the row is updated in place, never re-keyed.
                decision.changed.append((old.id, self._values(entry, old.identity, h, old)))
        return decision

    @staticmethod
    def _by_link(entry: ParsedEntry, by_link: dict[str, list[StoredItem]]) -> StoredItem | None:
        """A stored item with the same link, when that cannot be a different story: the feed
        started or stopped giving guids for it."""
        if not entry.link:
            return None
        candidates = by_link.get(entry.link, [])
        if len(candidates) != 1:
            return None
        old = candidates[0]
        entry_guid = (entry.guid or "").strip()
        if old.guid is None or not entry_guid:
            return old
        return None

    def _values(
        self, entry: ParsedEntry, identity: str, h: str, old: StoredItem | None
    ) -> ItemValues:
        published = entry.published_at or entry.updated_at
        from_feed = published is not None
        if published is None:
            # No date in the feed: the moment we first saw it (kept across updates).
            published = old.published_at if old is not None else self.now
        elif published > self.now + FUTURE_SLACK:
            published = self.now
        text = detect_text(entry)
        detected = self.detect(text) if text is not None else None
        return ItemValues(
            identity=identity,
            guid=(entry.guid or "").strip() or None,
            link=entry.link,
            title=entry.title,
            summary_html=entry.summary_html,
            summary_text=entry.summary_text,
            author=entry.author,
            image_url=entry.image_url,
            published_at=published,
            date_from_feed=from_feed,
            event_start=entry.event_start,
            event_end=entry.event_end,
            event_timezone=entry.event_timezone,
            all_day=entry.all_day,
            place_venue=entry.place_venue,
            place_town=entry.place_town,
            content_hash=h,
            fingerprint=self.fingerprint(entry.title, entry.summary_text),
            detected_language=detected,
            language_mismatch=detected is not None and detected != self.declared_language,
        )


# -- source health ---------------------------------------------------------------------------


def backoff_delay(
    failures: int,
    *,
    interval_minutes: float,
    max_hours: float,
    retry_after: float | None = None,
) -> timedelta:
    """How long a source rests after its ``failures``-th failure in a row.

    One fetch interval after the first failure, doubling after each further one, never more
    than ``max_hours``; a server's Retry-After is honoured when it asks for longer.
    """
    backoff = Backoff(base=interval_minutes * 60.0, cap=max_hours * 3600.0)
    return timedelta(seconds=backoff.delay(failures, retry_after))


@dataclass(frozen=True)
class SourceState:
    """A source's stored fetch state (a plain copy of the ``sources`` row)."""

    id: str
    url: str
    etag: str | None = None
    last_modified: str | None = None
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    watched_since: datetime | None = None


def is_due(state: SourceState, now: datetime, *, force: bool = False) -> bool:
    """A source is fetched unless it is resting after failures (``--all`` overrides)."""
    return force or state.next_attempt_at is None or state.next_attempt_at <= now


def after_success(
    state: SourceState,
    *,
    now: datetime,
    status: int,
    etag: str | None,
    last_modified: str | None,
    not_modified: bool,
    permanent_url: str | None,
    title: str | None = None,
    problem: str | None = None,
) -> dict[str, Any]:
    """Column values for a source fetched successfully (200 or 304)."""
    values: dict[str, Any] = {
        "last_fetched_at": now,
        "last_success_at": now,
        "last_status": status,
        "consecutive_failures": 0,
        "failing_since": None,
        "last_error": None,
        "next_attempt_at": None,
        "alerted_at": None,
    }
    if state.watched_since is None:
        values["watched_since"] = now  # the source watchdog counts stale_days from here
    if not_modified:
        # A 304 may repeat or refresh the validators; it never removes them.
        if etag:
            values["etag"] = etag
        if last_modified:
            values["last_modified"] = last_modified
    else:
        # A 200 without validators means the server stopped sending them: forget the old ones.
        values["etag"] = etag
        values["last_modified"] = last_modified
        values["parse_problem"] = problem
        if title:
            values["title"] = title
    if permanent_url and permanent_url != state.url:
        values["url"] = permanent_url
    return values


def after_failure(
    state: SourceState,
    *,
    now: datetime,
    error: str,
    status: int | None,
    retry_after: float | None,
    interval_minutes: float,
    max_backoff_hours: float,
) -> dict[str, Any]:
    """Column values for a failed source: count it, remember why, and rest it."""
    failures = state.consecutive_failures + 1
    delay = backoff_delay(
        failures,
        interval_minutes=interval_minutes,
        max_hours=max_backoff_hours,
        retry_after=retry_after,
    )
    return {
        "last_fetched_at": now,
        "last_status": status,
        "consecutive_failures": failures,
        "failing_since": state.failing_since or now,
        "last_error": error[:2000],
        "next_attempt_at": now + delay,
    }
