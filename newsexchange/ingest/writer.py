"""Parsing and storing fetched sources, batch by batch, in the writer thread (:class:`Writer`).

Per batch: parse each body (unless a worker process did), let the pure
:class:`~.decide.Decider` sort entries into new / changed / unchanged, link near-identical
stories (:class:`~.stories.StoryIndex`) and write the lot in one transaction through
:mod:`newsexchange.db.queries.items` and :mod:`~newsexchange.db.queries.sources`: inserts and
updates are executemany statements, never a query per item. If a batch fails to store, its
sources are retried one by one; if one source fails, its items one by one, so one bad source
(or item) cannot cost the others theirs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from newsexchange.config import Config, SourceSettings
from newsexchange.db import Database, Session
from newsexchange.db.queries.items import (
    find_stored,
    insert_items,
    insert_story_groups,
    mark_cancelled,
    recent_fingerprints,
    set_fulltext,
    set_story_groups,
    update_items,
)
from newsexchange.db.queries.sources import update_sources
from newsexchange.errors import FetchError
from newsexchange.ingest.decide import (
    Decider,
    Decision,
    SourceState,
    StoredItem,
    after_failure,
    after_success,
    lookup_keys,
)
from newsexchange.ingest.fetch import FetchResult
from newsexchange.ingest.fetched import Fetched, parse_body
from newsexchange.ingest.langdetect import detect_language
from newsexchange.ingest.model import ParsedEntry, ParsedFeed
from newsexchange.ingest.places import PlaceMatcher
from newsexchange.ingest.report import SourceOutcome
from newsexchange.ingest.stories import (
    SIMILAR_MAX_BITS,
    STORY_WINDOW,
    StoryIndex,
    StoryRef,
    fingerprint,
    similar,
)

__all__ = ["Writer"]

log = logging.getLogger("newsexchange.ingest")


@dataclass
class _Prepared:
    fetched: Fetched
    feed: ParsedFeed | None = None
    outcome: SourceOutcome | None = None
    source_values: dict[str, Any] = field(default_factory=dict)
    decision: Decision | None = None
    #: The entries' (identities, links); and the stored items they match, when looked up
    #: for the whole batch (None: the writer looks them up for this source alone).
    keys: tuple[set[str], set[str]] | None = None
    stored: list[StoredItem] | None = None


class Writer:
    """Parses and stores fetched sources, batch by batch, in the writer thread."""

    def __init__(self, db: Database, config: Config, *, now: datetime) -> None:
        self.db = db
        self.config = config
        self.now = now
        self._index: StoryIndex | None = None
        self._pending_failures: dict[str, dict[str, Any]] = {}
        self._places: dict[str, PlaceMatcher] = {}
        # Stored items that opened a story group in the current transaction: their rows'
        # story_group_id is set at its end, in one executemany (_flush_groups).
        self._joins: list[dict[str, Any]] = []

    def on_region(
        self, src: SourceSettings, entries: list[ParsedEntry]
    ) -> tuple[list[ParsedEntry], int]:
        """``require_place: true``: the entries whose title or summary (the feed's) names a
        place of the source's region (``regions.*.places``, case endings allowed), and how
        many were left out. Other sources: all entries, 0. Pure; also called by the pipeline,
        so that no article page is read for an entry that will not be stored."""
        if not src.require_place:
            return entries, 0
        matcher = self._places.get(src.region)
        if matcher is None:
            matcher = self._places[src.region] = PlaceMatcher(
                self.config.regions[src.region].places
            )
        kept = [e for e in entries if matcher.mentions(f"{e.title}\n{e.summary_text}")]
        return kept, len(entries) - len(kept)

    def parse(self, f: Fetched) -> ParsedFeed:
        """The parsed body of a fetch (the pipeline's ``fulltext`` path parses before the
        writer sees it); raises :class:`FetchError` like the writer's own parse."""
        assert f.result is not None
        return self._parse(f, f.result, self.config.fetch.summary_chars)

    # -- parsing ---------------------------------------------------------------------------

    def _prepare(self, f: Fetched) -> _Prepared:
        src, state = f.source, f.state
        p = _Prepared(f)
        if f.error is not None or f.result is None:
            err = f.error or FetchError("no result")
            p.outcome = self._failed(src, state, err)
            return p
        res = f.result
        moved = res.permanent_url if res.permanent_url and res.permanent_url != state.url else None
        if res.not_modified:
            self._not_modified(p, res, moved)
            return p
        feed = self._parse_or_fail(p, res)
        if feed is None:
            return p
        # require_place: entries about elsewhere are never stored (nor decided on).
        kept, off_region = self.on_region(src, feed.entries)
        problem = feed.problem
        if f.pages is not None:
            problem = "; ".join(filter(None, [problem, f.pages.problem()]))
        p.feed = replace(feed, entries=kept) if off_region else feed
        p.outcome = SourceOutcome(
            source=src.id,
            url=state.url,
            status="ok",
            http_status=res.status or None,
            entries=len(feed.entries),
            problem=problem or None,
            parser=feed.parser,
            moved_to=moved,
            skipped_off_region=off_region,
        )
        p.source_values = after_success(
            state,
            now=self.now,
            status=res.status or 200,
            etag=res.etag,
            last_modified=res.last_modified,
            not_modified=False,
            permanent_url=moved,
            title=feed.title,
            problem=problem or None,
        )
        return p

    def _not_modified(self, p: _Prepared, res: FetchResult, moved: str | None) -> None:
        """A 304 (or an unchanged file): no parsing, only the source's row."""
        src, state = p.fetched.source, p.fetched.state
        p.outcome = SourceOutcome(
            source=src.id,
            url=state.url,
            status="not_modified",
            http_status=res.status or None,
            moved_to=moved,
        )
        p.source_values = after_success(
            state,
            now=self.now,
            status=res.status or 304,
            etag=res.etag,
            last_modified=res.last_modified,
            not_modified=True,
            permanent_url=moved,
        )

    def _parse_or_fail(self, p: _Prepared, res: FetchResult) -> ParsedFeed | None:
        """The parsed body; or None, with the source's failure set on ``p``."""
        src, state = p.fetched.source, p.fetched.state
        try:
            return self._parse(p.fetched, res, self.config.fetch.summary_chars)
        except FetchError as exc:
            exc.status = exc.status or (res.status or None)
            p.outcome = self._failed(src, state, exc)
        except Exception as exc:  # a parser bug must not take the run down
            log.exception("unexpected parse error", extra={"source": src.id})
            p.outcome = self._failed(
                src,
                state,
                FetchError(
                    f"could not parse: {type(exc).__name__}: {exc}",
                    status=res.status or None,
                    retryable=False,
                ),
            )
        return None

    def _parse(self, f: Fetched, res: FetchResult, summary_chars: int) -> ParsedFeed:
        if f.pre is not None:  # parsed in a worker process
            if f.pre.error is not None or f.pre.feed is None:
                raise FetchError(f.pre.error or "could not parse", retryable=False)
            return f.pre.feed
        src = f.source
        return parse_body(
            src.kind,
            src.select,
            res.body or b"",
            url=res.final_url,
            content_type=res.content_type,
            summary_chars=summary_chars,
            timezone=str(self.config.region_tz(src.region)),
            now=self.now,
            event_window_days=self.config.fetch.event_window_days,
            places=tuple(self.config.regions[src.region].places),
        )

    def _failed(self, src: SourceSettings, state: SourceState, err: FetchError) -> SourceOutcome:
        values = after_failure(
            state,
            now=self.now,
            error=err.message,
            status=err.status,
            retry_after=err.retry_after,
            interval_minutes=self.config.fetch.interval_minutes,
            max_backoff_hours=self.config.fetch.max_backoff_hours,
        )
        self._pending_failures[src.id] = values
        # Info, not warning: the run's summary (below, and the command's output) names every
        # failed source once; a warning per source would also scribble over the progress bar.
        log.info(
            "source failed",
            extra={"source": src.id, "url": state.url, "status": err.status, "error": err.message},
        )
        return SourceOutcome(
            source=src.id,
            url=state.url,
            status="failed",
            http_status=err.status,
            error=err.message,
            next_attempt_at=values["next_attempt_at"],
        )

    # -- storing ---------------------------------------------------------------------------

    def write(self, batch: list[Fetched]) -> list[SourceOutcome]:
        self._pending_failures = {}
        prepared = [self._prepare(f) for f in batch]
        try:
            self._store(prepared)
        except Exception as exc:
            if len(prepared) > 1:
                log.warning("batch store failed; storing one by one", extra={"error": str(exc)})
                out: list[SourceOutcome] = []
                for f in batch:
                    out.extend(self.write([f]))
                return out
            return [self._store_alone(prepared[0], exc)]
        return [p.outcome for p in prepared if p.outcome is not None]

    def _store_alone(self, p: _Prepared, exc: Exception) -> SourceOutcome:
        """One source that failed to store: its items one by one, or its failure recorded."""
        if p.feed is not None and p.feed.entries:
            # One bad item must not fail its source (issue 10: a NUL byte failed a whole
            # feed on PostgreSQL, every fetch): store the items one by one, skip the bad.
            kept = self._store_item_by_item(p, exc)
            if kept is not None:
                return kept
        log.exception("storing failed", extra={"source": p.fetched.source.id})
        self._pending_failures = {}
        outcome = self._failed(
            p.fetched.source,
            p.fetched.state,
            FetchError(f"could not store: {type(exc).__name__}: {exc}", retryable=True),
        )
        try:
            with self.db.session() as s:
                update_sources(
                    s, [(p.fetched.source.id, self._pending_failures[p.fetched.source.id])]
                )
        except Exception:
            log.exception("recording the failure failed", extra={"source": outcome.source})
        return outcome

    def _store_item_by_item(self, p: _Prepared, first: Exception) -> SourceOutcome | None:
        """Store a source's items each in its own transaction after storing them together
        failed; the outcome (ok, with a problem naming the items left out), or None when no
        item could be stored (then the source fails as a whole: the database, not an item)."""
        assert p.feed is not None and p.outcome is not None
        src = p.fetched.source
        index = self._story_index()
        totals = [0, 0, 0]
        bad: list[str] = []
        for n, entry in enumerate(p.feed.entries, 1):
            one = _Prepared(
                p.fetched, feed=replace(p.feed, entries=[entry]), outcome=replace(p.outcome)
            )
            mark = index.mark()
            try:
                with self.db.session() as s:
                    self._store_items(s, one, index)
                    self._flush_groups(s)
            except Exception as exc:
                index.rollback(mark)
                self._drop_groups()
                what = entry.link or entry.guid or entry.title[:80] or "no title"
                bad.append(f"item {n} ({what}): {_brief(exc)}")
                continue
            assert one.outcome is not None
            totals[0] += one.outcome.new
            totals[1] += one.outcome.updated
            totals[2] += one.outcome.unchanged
        if len(bad) == len(p.feed.entries):
            return None
        note = f"{len(bad)} of {len(p.feed.entries)} items could not be stored: {bad[0]}"
        log.warning(
            "items could not be stored",
            extra={"source": src.id, "skipped": len(bad), "first": bad[0], "batch": _brief(first)},
        )
        out = p.outcome
        out.new, out.updated, out.unchanged = totals
        out.problem = "; ".join(filter(None, [out.problem, note]))
        values = {**p.source_values, "parse_problem": out.problem}
        try:
            with self.db.session() as s:
                update_sources(s, [(src.id, values)])
        except Exception:
            log.exception("recording the source failed", extra={"source": src.id})
        return out

    def _store(self, prepared: list[_Prepared]) -> None:
        # The story index is loaded only once some source brought entries (an all-304
        # refresh never needs it).
        needs_index = any(p.feed is not None and p.feed.entries for p in prepared)
        index = self._story_index() if needs_index else StoryIndex(similar)
        mark = index.mark()
        try:
            with self.db.session() as s:
                self._find_stored(s, prepared)
                updates: list[tuple[str, dict[str, Any]]] = []
                for p in prepared:
                    sid = p.fetched.source.id
                    if p.feed is not None:
                        self._store_items(s, p, index)
                    values = self._pending_failures.get(sid) or p.source_values
                    updates.append((sid, values))
                self._flush_groups(s)
                update_sources(s, updates)
        except BaseException:
            index.rollback(mark)
            self._drop_groups()
            raise

    def _find_stored(self, s: Session, prepared: list[_Prepared]) -> None:
        """The stored items matching each source's entries, for the whole batch in one
        lookup (two statements, not two a source). A source twice in the batch (never in one
        run) is left to look up its own, after its first time is stored."""
        count: dict[str, int] = {}
        for p in prepared:
            if p.feed is not None and p.feed.entries:
                p.keys = lookup_keys(p.feed.entries)
                count[p.fetched.source.id] = count.get(p.fetched.source.id, 0) + 1
        wanted = {
            p.fetched.source.id: p.keys
            for p in prepared
            if p.keys is not None and count[p.fetched.source.id] == 1
        }
        found = find_stored(s, wanted) if wanted else {}
        for p in prepared:
            rows = found.get(p.fetched.source.id)
            if rows is not None and p.keys is not None:
                p.stored = [StoredItem(*row) for row in rows]

    def _store_items(self, s: Session, p: _Prepared, index: StoryIndex) -> None:
        assert p.feed is not None and p.outcome is not None
        src = p.fetched.source
        entries = p.feed.entries
        self._store_entries(s, p, index)
        if p.feed.complete_between is not None:
            # After the entries are stored: a moved occurrence has its new start by then.
            idents = p.keys[0] if p.keys is not None else lookup_keys(entries)[0]
            p.outcome.cancelled = mark_cancelled(
                s, src.id, p.feed.complete_between, idents, self.now
            )

    def _store_entries(self, s: Session, p: _Prepared, index: StoryIndex) -> None:
        assert p.feed is not None and p.outcome is not None
        src = p.fetched.source
        entries = p.feed.entries
        if not entries:
            return
        if p.keys is None:
            p.keys = lookup_keys(entries)
        stored = p.stored
        if stored is None:
            found = find_stored(s, {src.id: p.keys})[src.id]
            stored = [StoredItem(*row) for row in found]
        decision = self._decider(p).decide(stored, entries)
        p.decision = decision
        p.outcome.new = len(decision.new)
        p.outcome.updated = len(decision.changed)
        p.outcome.unchanged = decision.unchanged
        now = self.now
        if decision.new:
            groups = self._match_stories(s, src, decision, index)
            rows = [
                {
                    **v.row(),
                    "source_id": src.id,
                    "region": src.region,
                    "category": src.category,
                    "language": src.language,
                    "first_seen_at": now,
                    "updated_at": now,
                    "story_group_id": group_id,
                }
                for v, group_id in zip(decision.new, groups, strict=True)
            ]
            id_of = insert_items(s, rows)
            self._index_new(src, decision, [id_of[v.identity] for v in decision.new], groups, index)
        pages = p.fetched.pages
        if decision.changed:
            # fulltext: an item whose page was tried keeps its stored summary (the article's
            # text, or the teaser it first had): see newsexchange.ingest.fulltext.
            keep = pages.plan.tried_ids if pages is not None else frozenset()
            rows = [
                {"id": item_id, **v.row(), "updated_at": now}
                for item_id, v in decision.changed
                if item_id not in keep
            ]
            kept = [
                {"id": item_id, **_without_summary(v.row()), "updated_at": now}
                for item_id, v in decision.changed
                if item_id in keep
            ]
            for group in (rows, kept):
                if group:
                    update_items(s, group)
        if pages is not None and pages.tried:
            texts, marks = pages.rows()
            set_fulltext(s, src.id, texts, marks, now)
            p.outcome.articles = len(texts)

    def _decider(self, p: _Prepared) -> Decider:
        """The decider for one source, using what a worker process computed, if any."""
        detect, fp_of = detect_language, fingerprint
        pre = p.fetched.pre
        if pre is not None:  # use what the worker computed; compute only what it skipped
            langs, fps = pre.languages, pre.fingerprints

            def detect(text: str) -> str | None:
                return langs[text] if text in langs else detect_language(text)

            def fp_of(title: str, text: str) -> str:
                fp = fps.get((title, text))
                return fp if fp is not None else fingerprint(title, text)

        return Decider(
            declared_language=p.fetched.source.language,
            now=self.now,
            detect=detect,
            fingerprint=fp_of,
        )

    # -- story groups ------------------------------------------------------------------------

    def _story_index(self) -> StoryIndex:
        if self._index is None:
            index = StoryIndex(similar, SIMILAR_MAX_BITS)
            since = self.now - STORY_WINDOW
            by_region: dict[str, list[StoryRef]] = {}
            with self.db.session() as s:
                for row in recent_fingerprints(s, since):
                    fp = _fp_int(row.fingerprint)
                    if fp:
                        by_region.setdefault(row.region, []).append(
                            StoryRef(row.id, row.source_id, fp, row.story_group_id)
                        )
            for region, refs in by_region.items():
                index.extend(region, refs)
            self._index = index
        return self._index

    def _match_stories(
        self, s: Session, src: SourceSettings, decision: Decision, index: StoryIndex
    ) -> list[int | None]:
        """The story group of each new item, before it is inserted (so that its row is
        inserted with it): a recent item of another source that is the same story gives its
        group; one without a group opens one (inserted here, one statement for the source;
        that item's own row joins at the end of the transaction). The new items of one source
        never match each other (``match`` skips the source), so matching them all before
        indexing any gives what matching and indexing them one by one did."""
        since = self.now - STORY_WINDOW
        opened: list[StoryRef] = []
        groups: list[int | None] = []
        for v in decision.new:
            ref = None
            if _fp_int(v.fingerprint) and v.published_at >= since:
                ref = index.match(src.region, src.id, v.fingerprint or "")
            if ref is not None and ref.group_id is None:
                opened.append(ref)
                index.set_group(ref, -len(opened))  # a stand-in id, until inserted below
            groups.append(ref.group_id if ref is not None else None)
        if not opened:
            return groups
        rows = [{"fingerprint": f"{r.fingerprint:016x}", "created_at": self.now} for r in opened]
        real = insert_story_groups(s, rows)
        for ref, group_id in zip(opened, real, strict=True):
            ref.group_id = group_id
            self._joins.append({"item_id": ref.item_id, "gid": group_id})
        return [real[-g - 1] if g is not None and g < 0 else g for g in groups]

    def _index_new(
        self,
        src: SourceSettings,
        decision: Decision,
        ids: list[int],
        groups: list[int | None],
        index: StoryIndex,
    ) -> None:
        """The new items (recent, with a fingerprint) join the story index."""
        since = self.now - STORY_WINDOW
        for item_id, v, group_id in zip(ids, decision.new, groups, strict=True):
            fp = _fp_int(v.fingerprint)
            if fp and v.published_at >= since:
                index.add(src.region, StoryRef(item_id, src.id, fp, group_id))

    def _flush_groups(self, s: Session) -> None:
        """The stored items that opened a story group in this transaction join it (one
        executemany)."""
        if self._joins:
            set_story_groups(s, self._joins)
        self._drop_groups()

    def _drop_groups(self) -> None:
        self._joins = []


def _without_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("summary_html", "summary_text")}


def _brief(exc: BaseException) -> str:
    """One line for a log or a source's problem: a database error's text also holds the
    whole statement and its parameters (kilobytes, and the bad value again)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


def _fp_int(fp: str | None) -> int:
    if not fp:
        return 0
    try:
        return int(fp, 16)
    except ValueError:
        return 0
