"""The fetch step: every due source → fetched, parsed, cleaned, stored (``run_fetch``).

How one run goes (one asyncio event loop, one writer thread):

1. The configured sources get their ``sources`` rows (created on first sight; a URL changed in
   feeds.yaml resets the stored URL and validators). Sources resting after failures
   (``next_attempt_at`` in the future) are skipped unless forced (``--all``).
2. All due sources are fetched concurrently through a :class:`~.fetch.Fetcher` (bounded
   overall and per host). Each result goes on a bounded queue, so bodies never pile up in
   memory faster than they are stored.
3. One writer thread takes whatever is queued (up to ``WRITE_BATCH`` sources), parses it,
   lets the pure :class:`~.store.Decider` sort entries into new / changed / unchanged, links
   near-identical stories (:class:`~.store.StoryIndex`) and writes the lot in one
   transaction: inserts and updates are executemany statements, never a query per item. If a
   batch fails to store, its sources are retried one by one, so one bad source cannot cost
   the others their items.
4. Every failure ends as that source's error (``FetchReport.failures``) and its health
   (consecutive failures, last error, next attempt); nothing a source does crashes the run.

A 304 (or an unchanged file) costs one request and one row update: no parsing at all.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from newsexchange.config import Config, HtmlSelect, SourceSettings
from newsexchange.db import Database, Item, Source, StoryGroup
from newsexchange.errors import ConfigError, FetchError
from newsexchange.ingest.decide import (
    Decider,
    Decision,
    SourceState,
    StoredItem,
    after_failure,
    after_success,
    content_hash,
    detect_text,
    is_due,
    lookup_keys,
)
from newsexchange.ingest.fetch import (
    FEED_ACCEPT,
    HTML_ACCEPT,
    DefaultFetcher,
    Fetcher,
    FetchOptions,
    FetchResult,
)
from newsexchange.ingest.model import ParsedFeed
from newsexchange.ingest.stories import STORY_WINDOW, StoryIndex, StoryRef

__all__ = ["FetchReport", "SourceOutcome", "fetch_options", "run_fetch"]

log = logging.getLogger(__name__)

#: Sources stored per transaction: enough to amortise the commit, few enough that a retry
#: one by one after a failed batch stays cheap.
WRITE_BATCH = 32
#: Bind parameters per IN (...) lookup chunk (SQLite's old default limit is 999).
LOOKUP_CHUNK = 400
#: With ``fetch.parse_workers`` set, runs with at least this many due sources parse in
#: worker processes (see _make_pool); smaller runs would not repay starting them.
POOL_MIN_SOURCES = 100
#: Items updated this recently count as "known" when deciding what a worker precomputes.
KNOWN_WINDOW = timedelta(days=30)

T = TypeVar("T")


@dataclass
class SourceOutcome:
    """What happened to one source in one run."""

    source: str
    url: str
    status: str  # ok | not_modified | failed | skipped
    http_status: int | None = None
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    entries: int = 0
    error: str | None = None
    problem: str | None = None  # a recoverable parse problem (partly broken feed)
    parser: str | None = None
    next_attempt_at: datetime | None = None
    moved_to: str | None = None  # permanent redirect: the stored URL now

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"source": self.source, "url": self.url, "status": self.status}
        for key in ("http_status", "error", "problem", "parser", "next_attempt_at", "moved_to"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value.isoformat() if isinstance(value, datetime) else value
        if self.status == "ok":
            data.update(
                entries=self.entries, new=self.new, updated=self.updated, unchanged=self.unchanged
            )
        return data


@dataclass
class FetchReport:
    """The result of :func:`run_fetch`; ``to_json()`` is what ``fetch --json`` prints.

    ``sources`` counts every source considered: ``ok`` (fetched and parsed) +
    ``not_modified`` (304 or an unchanged file) + ``failed`` + ``skipped`` (resting after
    failures).
    """

    outcomes: list[SourceOutcome] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def _count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def ok(self) -> int:
        return self._count("ok")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def not_modified(self) -> int:
        return self._count("not_modified")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def new_items(self) -> int:
        return sum(o.new for o in self.outcomes)

    @property
    def updated_items(self) -> int:
        return sum(o.updated for o in self.outcomes)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [
            {"source": o.source, "url": o.url, "error": o.error, "status": o.http_status}
            for o in self.outcomes
            if o.status == "failed"
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "sources": len(self.outcomes),
            "ok": self.ok,
            "not_modified": self.not_modified,
            "failed": self.failed,
            "skipped": self.skipped,
            "new_items": self.new_items,
            "updated_items": self.updated_items,
            "failures": self.failures,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "results": [o.to_json() for o in self.outcomes],
        }


Progress = Callable[[SourceOutcome, int, int], None]  # (outcome, done, total)


def fetch_options(config: Config) -> FetchOptions:
    f = config.fetch
    return FetchOptions(
        connect_timeout=f.connect_timeout,
        read_timeout=f.read_timeout,
        total_timeout=f.total_timeout,
        max_body_bytes=f.max_body_bytes,
        max_redirects=f.max_redirects,
        concurrency=f.concurrency,
        per_host=f.per_host,
        retries=f.retries,
        user_agent=config.user_agent,
        allow_private=tuple(f.allow_private),
    )


def run_fetch(
    db: Database,
    config: Config,
    *,
    now: datetime,
    source_ids: Sequence[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    fetcher: Fetcher | None = None,
) -> FetchReport:
    """Fetch the due sources (or ``source_ids``; all of them with ``force``) and store their
    items. Safe to run again: unchanged items are left alone."""
    started = time.perf_counter()
    selected = _select(config, source_ids)
    states = _sync_sources(db, selected)
    due = [s for s in selected if is_due(states[s.id], now, force=force or bool(source_ids))]
    due_ids = {s.id for s in due}
    skipped = [
        SourceOutcome(
            source=s.id,
            url=states[s.id].url,
            status="skipped",
            error=states[s.id].last_error,
            next_attempt_at=states[s.id].next_attempt_at,
        )
        for s in selected
        if s.id not in due_ids
    ]
    total = len(selected)
    done = 0
    if progress:
        for o in skipped:
            done += 1
            progress(o, done, total)
    outcomes: list[SourceOutcome] = []
    if due:
        outcomes = _run_coroutine(
            _fetch_all(
                db,
                config,
                due,
                states,
                now=now,
                fetcher=fetcher,
                progress=progress,
                done=done,
                total=total,
            )
        )
    by_id = {o.source: o for o in [*skipped, *outcomes]}
    missing = SourceOutcome  # a source with no outcome would be a bug; report it, not crash
    report = FetchReport(
        outcomes=[
            by_id.get(s.id)
            or missing(s.id, states[s.id].url, "failed", error="internal error: no result")
            for s in selected
        ],
        elapsed_seconds=time.perf_counter() - started,
    )
    log.log(
        logging.WARNING if report.failed else logging.INFO,
        "fetch finished" + (" with failures" if report.failed else ""),
        extra={
            # each failed source with its reason, so the log alone says what to fix
            "failed_sources": {f["source"]: f["error"] for f in report.failures[:50]},
            "sources": len(report.outcomes),
            "ok": report.ok,
            "not_modified": report.not_modified,
            "failed": report.failed,
            "skipped": report.skipped,
            "new_items": report.new_items,
            "updated_items": report.updated_items,
        },
    )
    return report


def _select(config: Config, source_ids: Sequence[str] | None) -> list[SourceSettings]:
    if not source_ids:
        return [s for s in config.sources if s.enabled]
    known = {s.id: s for s in config.sources}
    unknown = [sid for sid in source_ids if sid not in known]
    if unknown:
        raise ConfigError(
            f"unknown source {', '.join(map(repr, unknown))} (expected one of: "
            f"{', '.join(known) or 'none configured'})"
        )
    return [known[sid] for sid in dict.fromkeys(source_ids)]


def _state(row: Source) -> SourceState:
    return SourceState(
        id=row.id,
        url=row.url,
        etag=row.etag,
        last_modified=row.last_modified,
        consecutive_failures=row.consecutive_failures or 0,
        failing_since=row.failing_since,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
    )


def _sync_sources(db: Database, selected: list[SourceSettings]) -> dict[str, SourceState]:
    """Make sure every selected source has its row; follow URL changes made in feeds.yaml."""
    out: dict[str, SourceState] = {}
    ids = [s.id for s in selected]
    with db.session() as s:

        def load() -> dict[str, Source]:
            rows: dict[str, Source] = {}
            for chunk in _chunks(ids, LOOKUP_CHUNK):
                q = select(Source).where(Source.id.in_(chunk))
                rows.update({r.id: r for r in s.scalars(q)})
            return rows

        rows = load()
        missing = [
            {"id": src.id, "config_url": src.url, "url": src.url, "consecutive_failures": 0}
            for src in selected
            if src.id not in rows
        ]
        if missing:
            # Two runs starting at once (the service and a console fetch) both see the row
            # missing; the conflict-free insert lets both go on with the one row.
            s.execute(_insert_ignoring_conflicts(s, Source, ["id"]), missing)
            rows = load()
        for src in selected:
            row = rows[src.id]
            if row.config_url != src.url:
                # The editor changed the URL: start over from it (old validators and a
                # redirect learnt for the old URL do not apply to the new one).
                row.config_url = row.url = src.url
                row.etag = row.last_modified = None
                row.next_attempt_at = None
            out[src.id] = _state(row)
    return out


def _chunks(seq: Sequence[T], n: int) -> list[Sequence[T]]:
    return [seq[i : i + n] for i in range(0, len(seq), n)]


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, also from a thread that already runs an event loop (the web app)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed back to the caller below
            box["error"] = exc

    t = threading.Thread(target=target, name="newsexchange-fetch")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


@dataclass
class _Fetched:
    source: SourceSettings
    state: SourceState
    result: FetchResult | None
    error: FetchError | None
    pre: _Precomputed | None = None  # parsed in a worker process (large runs)


@dataclass
class _Precomputed:
    """What a worker process did for one body: the parsed feed (or why not), and the
    fingerprints and languages of the entries not already stored unchanged."""

    feed: ParsedFeed | None
    error: str | None = None
    fingerprints: dict[tuple[str, str], str] = field(default_factory=dict)
    languages: dict[str, str | None] = field(default_factory=dict)


def _parse_body(
    kind: str,
    select_: HtmlSelect | None,
    body: bytes,
    *,
    url: str,
    content_type: str | None,
    summary_chars: int,
    timezone: str,
    now: datetime,
) -> ParsedFeed:
    if kind == "html":
        from newsexchange.ingest.clean import scrub_feed
        from newsexchange.ingest.scrape import parse_html_page

        assert select_ is not None  # checked by the config
        page = parse_html_page(
            body,
            url=url,
            select=select_,
            content_type=content_type,
            summary_chars=summary_chars,
            # A page's dates rarely carry a zone: they are the region's local time.
            timezone=timezone,
            now=now,
        )
        # parse_feed scrubs its own output; the page scraper's goes through the same rules.
        return scrub_feed(page)
    from newsexchange.ingest.parse import parse_feed

    return parse_feed(body, url=url, content_type=content_type, summary_chars=summary_chars)


def _worker_init() -> None:
    """Import the parsers and load the language model once per worker process."""
    from newsexchange.ingest import clean, parse, scrape  # noqa: F401
    from newsexchange.ingest.langdetect import detect_language

    detect_language("Joensuun kaupunki avaa uuden kirjaston keskustaan ensi keväänä.")


def _prepare_in_worker(
    kind: str,
    select_: HtmlSelect | None,
    body: bytes,
    url: str,
    content_type: str | None,
    summary_chars: int,
    timezone: str,
    now: datetime,
    known: frozenset[str],
) -> _Precomputed:
    """Runs in a worker process: parse, then the CPU-heavy per-entry work for every entry
    whose content is not already stored (``known`` content hashes of the source)."""
    try:
        feed = _parse_body(
            kind,
            select_,
            body,
            url=url,
            content_type=content_type,
            summary_chars=summary_chars,
            timezone=timezone,
            now=now,
        )
    except FetchError as exc:
        return _Precomputed(None, exc.message)
    except Exception as exc:  # a parser bug: this source's error only
        return _Precomputed(None, f"could not parse: {type(exc).__name__}: {exc}")
    from newsexchange.ingest.clean import fingerprint
    from newsexchange.ingest.langdetect import detect_language

    pre = _Precomputed(feed)
    for e in feed.entries:
        if content_hash(e) in known:
            continue
        pre.fingerprints[(e.title, e.summary_text)] = fingerprint(e.title, e.summary_text)
        text = detect_text(e)
        if text is not None:
            pre.languages[text] = detect_language(text)
    return pre


def _known_hashes(db: Database, source_ids: list[str], now: datetime) -> dict[str, set[str]]:
    """Content hashes of each source's recently updated items: entries with these need no
    fingerprint or language detection (they will come out unchanged)."""
    out: dict[str, set[str]] = {}
    since = now - KNOWN_WINDOW
    with db.session() as s:
        for chunk in _chunks(source_ids, LOOKUP_CHUNK):
            q = select(Item.source_id, Item.content_hash).where(
                Item.source_id.in_(chunk), Item.updated_at >= since
            )
            for row in s.execute(q):
                out.setdefault(row.source_id, set()).add(row.content_hash)
    return out


def _make_pool(workers: int, n_sources: int) -> ProcessPoolExecutor | None:
    """``fetch.parse_workers`` worker processes, when the run is big enough to repay
    starting them (~1 s each: imports and the language model; ~190 MB each).

    Off by default: on the 2-core machine this was measured on, with the feed server and
    other work sharing the cores, the workers halved the fetching process's CPU per feed but
    did not raise feeds/s, and cost a second process's memory. Worth it with idle cores."""
    if workers < 1 or n_sources < POOL_MIN_SOURCES:
        return None
    # spawn, not fork: the parent has threads (the writer) and open database connections.
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
    )


async def _fetch_all(
    db: Database,
    config: Config,
    due: list[SourceSettings],
    states: dict[str, SourceState],
    *,
    now: datetime,
    fetcher: Fetcher | None,
    progress: Progress | None,
    done: int,
    total: int,
) -> list[SourceOutcome]:
    own = fetcher is None
    the_fetcher: Fetcher = fetcher or DefaultFetcher(
        fetch_options(config), base_dir=config.base_dir
    )
    queue: asyncio.Queue[_Fetched | None] = asyncio.Queue(maxsize=2 * WRITE_BATCH)
    writer = _Writer(db, config, now=now)
    outcomes: list[SourceOutcome] = []

    # Worker processes start only when a first body needs parsing (an all-304 refresh
    # starts none), and the stored hashes are read once, at that moment.
    pool = _make_pool(config.fetch.parse_workers, len(due))
    known_task: asyncio.Task[dict[str, set[str]]] | None = None
    loop = asyncio.get_running_loop()

    pool_broken = False

    async def precompute(src: SourceSettings, result: FetchResult) -> _Precomputed | None:
        nonlocal known_task, pool_broken
        if pool is None or pool_broken or result.body is None:
            return None
        if known_task is None:
            known_task = asyncio.create_task(
                asyncio.to_thread(_known_hashes, db, [s.id for s in due], now)
            )
        try:
            known = await known_task
            return await loop.run_in_executor(
                pool,
                _prepare_in_worker,
                src.kind,
                src.select,
                result.body,
                result.final_url,
                result.content_type,
                config.fetch.summary_chars,
                str(config.region_tz(src.region)),
                now,
                frozenset(known.get(src.id, ())),
            )
        except Exception:  # a broken pool: the writer parses this and every later body
            if not pool_broken:
                pool_broken = True
                log.warning("parse workers failed; parsing in process", exc_info=True)
            return None

    async def fetch_one(src: SourceSettings) -> None:
        state = states[src.id]
        accept = HTML_ACCEPT if src.kind == "html" else FEED_ACCEPT
        try:
            result = await the_fetcher.fetch(
                state.url, etag=state.etag, last_modified=state.last_modified, accept=accept
            )
            item = _Fetched(src, state, result, None, await precompute(src, result))
        except FetchError as exc:
            item = _Fetched(src, state, None, exc)
        except Exception as exc:  # a bug or a surprise in a library: this source's error only
            log.exception("unexpected fetch error", extra={"source": src.id})
            item = _Fetched(
                src, state, None, FetchError(f"unexpected error: {type(exc).__name__}: {exc}")
            )
        await queue.put(item)

    async def write_all() -> None:
        nonlocal done
        finished = False
        while not finished:
            first = await queue.get()
            batch: list[_Fetched] = []
            if first is None:
                finished = True
            else:
                batch.append(first)
            while not finished and len(batch) < WRITE_BATCH and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    finished = True
                else:
                    batch.append(nxt)
            if not batch:
                continue
            try:
                stored = await asyncio.to_thread(writer.write, batch)
            except Exception as exc:  # a bug in storing: those sources fail, the run goes on
                # (a dead writer would leave the fetchers blocked on a full queue forever)
                log.exception("writer failed", extra={"sources": [f.source.id for f in batch]})
                stored = [
                    SourceOutcome(
                        source=f.source.id,
                        url=f.state.url,
                        status="failed",
                        error=f"internal error while storing: {type(exc).__name__}: {exc}",
                    )
                    for f in batch
                ]
            for o in stored:
                outcomes.append(o)
                done += 1
                if progress:
                    try:
                        progress(o, done, total)
                    except Exception:  # a display problem must not stop the fetch
                        log.debug("progress callback failed", exc_info=True)

    writer_task = asyncio.create_task(write_all())
    try:
        # A fixed set of workers rather than one task per source: asyncio.Semaphore's
        # acquire is O(waiters) in 3.11, so a thousand tasks queued on it cost more event-loop
        # time than the requests. Sources are interleaved by host so that workers waiting
        # for one busy host's slots are the exception.
        pending = iter(_interleave_by_host(due, states))

        async def worker() -> None:
            for src in pending:
                await fetch_one(src)

        n = min(config.fetch.concurrency, len(due))
        await asyncio.gather(*(worker() for _ in range(n)))
        await queue.put(None)
        await writer_task
    finally:
        if not writer_task.done():
            writer_task.cancel()
        if own:
            await the_fetcher.aclose()
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
    return outcomes


def _interleave_by_host(
    due: list[SourceSettings], states: dict[str, SourceState]
) -> list[SourceSettings]:
    """Round-robin over hosts: a, b, c, a, b, c … instead of a, a, a, b, b, b …"""
    by_host: dict[str, list[SourceSettings]] = {}
    for src in due:
        host = (urlsplit(states[src.id].url).hostname or "").lower()
        by_host.setdefault(host, []).append(src)
    queues = list(by_host.values())
    out: list[SourceSettings] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


@dataclass
class _Prepared:
    fetched: _Fetched
    feed: ParsedFeed | None = None
    outcome: SourceOutcome | None = None
    source_values: dict[str, Any] = field(default_factory=dict)
    decision: Decision | None = None


class _Writer:
    """Parses and stores fetched sources, batch by batch, in the writer thread."""

    def __init__(self, db: Database, config: Config, *, now: datetime) -> None:
        from newsexchange.ingest.clean import SIMILAR_MAX_BITS, fingerprint, similar
        from newsexchange.ingest.langdetect import detect_language

        self.db = db
        self.config = config
        self.now = now
        self._detect = detect_language
        self._fingerprint = fingerprint
        self._similar = similar
        self._max_bits = SIMILAR_MAX_BITS
        self._index: StoryIndex | None = None
        self._pending_failures: dict[str, dict[str, Any]] = {}

    # -- parsing ---------------------------------------------------------------------------

    def _prepare(self, f: _Fetched) -> _Prepared:
        src, state = f.source, f.state
        p = _Prepared(f)
        fetch_cfg = self.config.fetch
        if f.error is not None or f.result is None:
            err = f.error or FetchError("no result")
            p.outcome = self._failed(src, state, err)
            return p
        res = f.result
        moved = res.permanent_url if res.permanent_url and res.permanent_url != state.url else None
        if res.not_modified:
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
            return p
        try:
            feed = self._parse(f, res, fetch_cfg.summary_chars)
        except FetchError as exc:
            exc.status = exc.status or (res.status or None)
            p.outcome = self._failed(src, state, exc)
            return p
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
            return p
        p.feed = feed
        p.outcome = SourceOutcome(
            source=src.id,
            url=state.url,
            status="ok",
            http_status=res.status or None,
            entries=len(feed.entries),
            problem=feed.problem,
            parser=feed.parser,
            moved_to=moved,
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
            problem=feed.problem,
        )
        return p

    def _parse(self, f: _Fetched, res: FetchResult, summary_chars: int) -> ParsedFeed:
        if f.pre is not None:  # parsed in a worker process
            if f.pre.error is not None or f.pre.feed is None:
                raise FetchError(f.pre.error or "could not parse", retryable=False)
            return f.pre.feed
        src = f.source
        return _parse_body(
            src.kind,
            src.select,
            res.body or b"",
            url=res.final_url,
            content_type=res.content_type,
            summary_chars=summary_chars,
            timezone=str(self.config.region_tz(src.region)),
            now=self.now,
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

    def write(self, batch: list[_Fetched]) -> list[SourceOutcome]:
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
            p = prepared[0]
            if p.feed is not None and p.feed.entries:
                # One bad item must not fail its source (issue 10: a NUL byte failed a whole
                # feed on PostgreSQL, every fetch): store the items one by one, skip the bad.
                kept = self._store_item_by_item(p, exc)
                if kept is not None:
                    return [kept]
            log.exception("storing failed", extra={"source": p.fetched.source.id})
            self._pending_failures = {}
            outcome = self._failed(
                p.fetched.source,
                p.fetched.state,
                FetchError(f"could not store: {type(exc).__name__}: {exc}", retryable=True),
            )
            try:
                with self.db.session() as s:
                    self._update_sources(
                        s, [(p.fetched.source.id, self._pending_failures[p.fetched.source.id])]
                    )
            except Exception:
                log.exception("recording the failure failed", extra={"source": outcome.source})
            return [outcome]
        return [p.outcome for p in prepared if p.outcome is not None]

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
            except Exception as exc:
                index.rollback(mark)
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
                self._update_sources(s, [(src.id, values)])
        except Exception:
            log.exception("recording the source failed", extra={"source": src.id})
        return out

    def _store(self, prepared: list[_Prepared]) -> None:
        # The story index is loaded only once some source brought entries (an all-304
        # refresh never needs it).
        needs_index = any(p.feed is not None and p.feed.entries for p in prepared)
        index = self._story_index() if needs_index else StoryIndex(self._similar)
        mark = index.mark()
        try:
            with self.db.session() as s:
                updates: list[tuple[str, dict[str, Any]]] = []
                for p in prepared:
                    sid = p.fetched.source.id
                    if p.feed is not None:
                        self._store_items(s, p, index)
                    values = self._pending_failures.get(sid) or p.source_values
                    updates.append((sid, values))
                self._update_sources(s, updates)
        except BaseException:
            index.rollback(mark)
            raise

    @staticmethod
    def _update_sources(s: Session, updates: list[tuple[str, dict[str, Any]]]) -> None:
        # One Core executemany per distinct set of columns (the ORM's bulk update by primary
        # key did the same at about twice the cost per row, felt on all-304 refreshes).
        table = cast(Table, Source.__table__)
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for sid, values in updates:
            row = {f"v_{k}": v for k, v in values.items()}
            row["k_id"] = sid
            groups.setdefault(tuple(sorted(values)), []).append(row)
        conn = s.connection()
        for columns, rows in groups.items():
            stmt = (
                table.update()
                .where(table.c.id == bindparam("k_id"))
                .values({c: bindparam(f"v_{c}", type_=table.c[c].type) for c in columns})
            )
            conn.execute(stmt, rows)

    def _store_items(self, s: Session, p: _Prepared, index: StoryIndex) -> None:
        assert p.feed is not None and p.outcome is not None
        src = p.fetched.source
        entries = p.feed.entries
        if not entries:
            return
        idents, links = lookup_keys(entries)
        stored: list[StoredItem] = []
        seen_ids: set[int] = set()
        cols = (Item.id, Item.identity, Item.guid, Item.link, Item.content_hash, Item.published_at)
        keys: list[tuple[Any, list[str]]] = [
            (Item.identity, sorted(idents)),
            (Item.link, sorted(links)),
        ]
        for column, values in keys:
            for chunk in _chunks(values, LOOKUP_CHUNK):
                q = select(*cols).where(Item.source_id == src.id, column.in_(chunk))
                for row in s.execute(q):
                    if row.id not in seen_ids:
                        seen_ids.add(row.id)
                        stored.append(
                            StoredItem(
                                row.id,
                                row.identity,
                                row.guid,
                                row.link,
                                row.content_hash,
                                row.published_at,
                            )
                        )
        detect, fingerprint = self._detect, self._fingerprint
        pre = p.fetched.pre
        if pre is not None:  # use what the worker computed; compute only what it skipped
            langs, fps = pre.languages, pre.fingerprints

            def detect(text: str) -> str | None:
                return langs[text] if text in langs else self._detect(text)

            def fingerprint(title: str, text: str) -> str:
                fp = fps.get((title, text))
                return fp if fp is not None else self._fingerprint(title, text)

        decider = Decider(
            declared_language=src.language, now=self.now, detect=detect, fingerprint=fingerprint
        )
        decision = decider.decide(stored, entries)
        p.decision = decision
        p.outcome.new = len(decision.new)
        p.outcome.updated = len(decision.changed)
        p.outcome.unchanged = decision.unchanged
        now = self.now
        if decision.new:
            rows = [
                {
                    **v.row(),
                    "source_id": src.id,
                    "region": src.region,
                    "category": src.category,
                    "language": src.language,
                    "first_seen_at": now,
                    "updated_at": now,
                }
                for v in decision.new
            ]
            # A plain executemany, then one query for the ids: RETURNING with
            # sort_by_parameter_order degrades to one INSERT per row on SQLite (no sentinel
            # column), which was a third of the writer's time.
            s.execute(_insert_ignoring_conflicts(s, Item, ["source_id", "identity"]), rows)
            wanted = [v.identity for v in decision.new]
            id_of: dict[str, int] = {}
            for chunk in _chunks(wanted, LOOKUP_CHUNK):
                ids_q = select(Item.identity, Item.id).where(
                    Item.source_id == src.id, Item.identity.in_(chunk)
                )
                id_of.update({row.identity: row.id for row in s.execute(ids_q)})
            ids = [id_of[ident] for ident in wanted]
            self._link_stories(s, src, decision, ids, index)
        if decision.changed:
            s.execute(
                update(Item),
                [{"id": item_id, **v.row(), "updated_at": now} for item_id, v in decision.changed],
            )

    # -- story groups ------------------------------------------------------------------------

    def _story_index(self) -> StoryIndex:
        if self._index is None:
            index = StoryIndex(self._similar, self._max_bits)
            since = self.now - STORY_WINDOW
            with self.db.session() as s:
                q = (
                    select(
                        Item.id, Item.source_id, Item.region, Item.fingerprint, Item.story_group_id
                    )
                    .where(Item.published_at >= since, Item.fingerprint.is_not(None))
                    .order_by(Item.id)
                )
                by_region: dict[str, list[StoryRef]] = {}
                for row in s.execute(q):
                    fp = _fp_int(row.fingerprint)
                    if fp:
                        by_region.setdefault(row.region, []).append(
                            StoryRef(row.id, row.source_id, fp, row.story_group_id)
                        )
            for region, refs in by_region.items():
                index.extend(region, refs)
            self._index = index
        return self._index

    def _link_stories(
        self,
        s: Session,
        src: SourceSettings,
        decision: Decision,
        ids: list[int],
        index: StoryIndex,
    ) -> None:
        since = self.now - STORY_WINDOW
        set_group: list[dict[str, Any]] = []
        conn = s.connection()
        groups = cast(Table, StoryGroup.__table__)
        for item_id, v in zip(ids, decision.new, strict=True):
            fp = _fp_int(v.fingerprint)
            if not fp or v.published_at < since:
                continue
            ref = index.match(src.region, src.id, v.fingerprint or "")
            group_id: int | None = None
            if ref is not None:
                if ref.group_id is None:
                    # Core, one row: lastrowid on SQLite, RETURNING on PostgreSQL (the ORM
                    # path cost ~1.7 ms a group).
                    res = conn.execute(
                        groups.insert(),
                        {"fingerprint": f"{ref.fingerprint:016x}", "created_at": self.now},
                    )
                    pk = res.inserted_primary_key
                    assert pk is not None
                    gid = int(pk[0])
                    index.set_group(ref, gid)
                    set_group.append({"item_id": ref.item_id, "gid": gid})
                group_id = ref.group_id
                set_group.append({"item_id": item_id, "gid": group_id})
            index.add(src.region, StoryRef(item_id, src.id, fp, group_id))
        if set_group:
            items = cast(Table, Item.__table__)
            conn.execute(
                items.update()
                .where(items.c.id == bindparam("item_id"))
                .values(story_group_id=bindparam("gid")),
                set_group,
            )


def _brief(exc: BaseException) -> str:
    """One line for a log or a source's problem: a database error's text also holds the
    whole statement and its parameters (kilobytes, and the bad value again)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


def _insert_ignoring_conflicts(s: Session, model: type[Any], keys: list[str]) -> Any:
    """INSERT that skips rows another process stored meanwhile (the service and a console
    ``fetch`` at the same time): the unique key keeps one copy, and ON CONFLICT DO NOTHING
    keeps the late writer's transaction from failing over it."""
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(model).on_conflict_do_nothing(index_elements=keys)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model).on_conflict_do_nothing(index_elements=keys)
    return insert(model)


def _fp_int(fp: str | None) -> int:
    if not fp:
        return 0
    try:
        return int(fp, 16)
    except ValueError:
        return 0
