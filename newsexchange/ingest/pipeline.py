"""How a run's due sources are fetched and handed to the writer: one asyncio event loop, a
fixed set of fetching workers, a bounded queue, one writer thread (and, for big runs, parse
worker processes). Compare lemon24/reader's ``_update.Pipeline``; in ``xargs`` pseudocode::

    interleave_by_host(due) | fetch -P concurrency | [parse in a worker] | queue -n 2×BATCH \\
        | writer.write -n WRITE_BATCH

Does not decide what is due, new or changed (:mod:`.decide` does) nor how anything is stored
(:mod:`.writer`); every failure ends as that source's outcome, never as the run's exception.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from collections.abc import Coroutine
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from newsexchange.config import Config, SourceSettings
from newsexchange.db import Database
from newsexchange.db.queries.items import fulltext_state, known_hashes
from newsexchange.errors import FetchError
from newsexchange.ingest.decide import SourceState, lookup_keys
from newsexchange.ingest.fetch import (
    FEED_ACCEPT,
    HTML_ACCEPT,
    DefaultFetcher,
    Fetcher,
    FetchResult,
    fetch_options,
)
from newsexchange.ingest.fetched import Fetched, Precomputed, prepare_body
from newsexchange.ingest.fulltext import StoredPage, plan_pages, read_pages
from newsexchange.ingest.ical import ICAL_ACCEPT
from newsexchange.ingest.model import ParsedEntry
from newsexchange.ingest.report import Progress, SourceOutcome
from newsexchange.ingest.writer import Writer

__all__ = ["POOL_MIN_SOURCES", "WRITE_BATCH", "fetch_all", "interleave_by_host", "run_coroutine"]

log = logging.getLogger("newsexchange.ingest")

#: Sources stored per transaction: enough to amortise the commit, few enough that a retry
#: one by one after a failed batch stays cheap.
WRITE_BATCH = 32
#: With ``fetch.parse_workers`` set, runs with at least this many due sources parse in
#: worker processes (see _make_pool); smaller runs would not repay starting them.
POOL_MIN_SOURCES = 100
#: Items updated this recently count as "known" when deciding what a worker precomputes.
KNOWN_WINDOW = timedelta(days=30)

T = TypeVar("T")


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
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


# -- parse worker processes ---------------------------------------------------------------------


def _known_hashes(db: Database, source_ids: list[str], now: datetime) -> dict[str, set[str]]:
    """Content hashes of each source's recently updated items: entries with these need no
    fingerprint or language detection (they will come out unchanged)."""
    with db.session() as s:
        return known_hashes(s, source_ids, now - KNOWN_WINDOW)


def _stored_pages(db: Database, source_id: str, entries: list[ParsedEntry]) -> list[StoredPage]:
    """The source's stored items matching ``entries``, with whether their page was tried."""
    idents, links = lookup_keys(entries)
    with db.session() as s:
        return [StoredPage(*row) for row in fulltext_state(s, source_id, idents, links)]


def _make_pool(workers: int, n_sources: int) -> ProcessPoolExecutor | None:
    """``fetch.parse_workers`` worker processes, when the run is big enough to repay
    starting them (~1 s each: the imports, and the language model once a text needs it;
    ~113 MB each with the model, as a worker imports only :mod:`.fetched` and its parsers,
    while the fetching process then never loads the model: 145 MB instead of 208 at 1,000
    feeds).

    Off by default: on the 2-core machine this was measured on, with the feed server and
    other work sharing the cores, the workers halved the fetching process's CPU per feed but
    did not raise feeds/s, and cost a second process's memory. Worth it with idle cores."""
    if workers < 1 or n_sources < POOL_MIN_SOURCES:
        return None
    # spawn, not fork: the parent has threads (the writer) and open database connections.
    return ProcessPoolExecutor(
        max_workers=workers,
        # No initializer loading the language model: langdetect loads it on the first text
        # the script alone does not settle (never for a worker that reads only Russian).
        mp_context=multiprocessing.get_context("spawn"),
    )


# -- one run ------------------------------------------------------------------------------------


async def fetch_all(
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
    """Fetch ``due`` and store what came back; one outcome per source, in the order stored.
    ``done`` of ``total`` sources were already reported to ``progress`` (the skipped ones)."""
    run = _Run(db, config, due, states, now=now, fetcher=fetcher, progress=progress)
    run.done, run.total = done, total
    await run.run()
    return run.outcomes


class _Run:
    """The state of one :func:`fetch_all`: the queue, the writer, the optional pool."""

    def __init__(
        self,
        db: Database,
        config: Config,
        due: list[SourceSettings],
        states: dict[str, SourceState],
        *,
        now: datetime,
        fetcher: Fetcher | None,
        progress: Progress | None,
    ) -> None:
        self.db, self.config, self.due, self.states, self.now = db, config, due, states, now
        self.own = fetcher is None
        self.fetcher: Fetcher = fetcher or DefaultFetcher(
            fetch_options(config), base_dir=config.base_dir
        )
        self.progress = progress
        self.done = self.total = 0
        self.queue: asyncio.Queue[Fetched | None] = asyncio.Queue(maxsize=2 * WRITE_BATCH)
        self.writer = Writer(db, config, now=now)
        self.outcomes: list[SourceOutcome] = []
        # Worker processes start only when a first body needs parsing (an all-304 refresh
        # starts none), and the stored hashes are read once, at that moment.
        self.pool = _make_pool(config.fetch.parse_workers, len(due))
        self.known_task: asyncio.Task[dict[str, set[str]]] | None = None
        self.pool_broken = False

    async def run(self) -> None:
        writer_task = asyncio.create_task(self.write_all())
        try:
            # A fixed set of workers rather than one task per source: asyncio.Semaphore's
            # acquire is O(waiters) in 3.11, so a thousand tasks queued on it cost more
            # event-loop time than the requests. Sources are interleaved by host so that
            # workers waiting for one busy host's slots are the exception.
            pending = iter(interleave_by_host(self.due, self.states))

            async def worker() -> None:
                for src in pending:
                    await self.fetch_one(src)

            n = min(self.config.fetch.concurrency, len(self.due))
            await asyncio.gather(*(worker() for _ in range(n)))
            await self.queue.put(None)
            await writer_task
        finally:
            if not writer_task.done():
                writer_task.cancel()
            if self.own:
                await self.fetcher.aclose()
            if self.pool is not None:
                await asyncio.to_thread(self.pool.shutdown, True, cancel_futures=True)

    async def precompute(self, src: SourceSettings, result: FetchResult) -> Precomputed | None:
        if self.pool is None or self.pool_broken or result.body is None:
            return None
        if self.known_task is None:
            self.known_task = asyncio.create_task(
                asyncio.to_thread(_known_hashes, self.db, [s.id for s in self.due], self.now)
            )
        try:
            known = await self.known_task
            return await asyncio.get_running_loop().run_in_executor(
                self.pool,
                prepare_body,
                src.kind,
                src.select,
                result.body,
                result.final_url,
                result.content_type,
                self.config.fetch.summary_chars,
                str(self.config.region_tz(src.region)),
                self.now,
                frozenset(known.get(src.id, ())),
                self.config.fetch.event_window_days,
                tuple(self.config.regions[src.region].places),
            )
        except Exception:  # a broken pool: the writer parses this and every later body
            if not self.pool_broken:
                self.pool_broken = True
                log.warning("parse workers failed; parsing in process", exc_info=True)
            return None

    async def fetch_one(self, src: SourceSettings) -> None:
        state = self.states[src.id]
        accept = {"html": HTML_ACCEPT, "ical": ICAL_ACCEPT}.get(src.kind, FEED_ACCEPT)
        try:
            result = await self.fetcher.fetch(
                state.url, etag=state.etag, last_modified=state.last_modified, accept=accept
            )
            item = Fetched(src, state, result, None, await self.precompute(src, result))
        except FetchError as exc:
            item = Fetched(src, state, None, exc)
        except Exception as exc:  # a bug or a surprise in a library: this source's error only
            log.exception("unexpected fetch error", extra={"source": src.id})
            item = Fetched(
                src, state, None, FetchError(f"unexpected error: {type(exc).__name__}: {exc}")
            )
        if src.fulltext and item.result is not None and item.result.body is not None:
            await self.read_articles(item)
        await self.queue.put(item)

    async def read_articles(self, item: Fetched) -> None:
        """``fulltext: true``: parse the feed here (the writer then takes this parse, as it
        takes a worker's), plan which entries' pages are due and read them (the rules are in
        :mod:`.fulltext`). Never fails the source: a feed that does not parse is left to the
        writer to report, and any other trouble leaves the teasers (pages not tried are
        tried next run)."""
        src = item.source
        try:
            if item.pre is None:
                item.pre = Precomputed(await asyncio.to_thread(self.writer.parse, item))
            feed = item.pre.feed
            if feed is None:
                return
            entries, _ = self.writer.on_region(src, feed.entries)
            if not entries:
                return
            stored = await asyncio.to_thread(_stored_pages, self.db, src.id, entries)
            item.pages = await read_pages(
                self.fetcher,
                plan_pages(entries, stored),
                per_host=self.config.fetch.per_host,
                limit=self.config.fetch.fulltext_chars,
                source=src.id,
            )
        except FetchError:
            return  # the feed does not parse: the writer parses again and says why
        except Exception:
            log.exception("reading article pages failed", extra={"source": src.id})

    async def next_batch(self) -> tuple[list[Fetched], bool]:
        """Whatever is queued, up to WRITE_BATCH (waiting for the first); and whether the
        end of the run was reached."""
        first = await self.queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < WRITE_BATCH and not self.queue.empty():
            nxt = self.queue.get_nowait()
            if nxt is None:
                return batch, True
            batch.append(nxt)
        return batch, False

    async def write_all(self) -> None:
        finished = False
        while not finished:
            batch, finished = await self.next_batch()
            if not batch:
                continue
            try:
                stored = await asyncio.to_thread(self.writer.write, batch)
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
                self.report(o)

    def report(self, outcome: SourceOutcome) -> None:
        self.outcomes.append(outcome)
        self.done += 1
        if self.progress:
            try:
                self.progress(outcome, self.done, self.total)
            except Exception:  # a display problem must not stop the fetch
                log.debug("progress callback failed", exc_info=True)


def interleave_by_host(
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
