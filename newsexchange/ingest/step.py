"""The fetch step: every due source → fetched, parsed, cleaned, stored (:func:`run_fetch`).

How one run goes (one asyncio event loop, one writer thread):

1. The configured sources get their ``sources`` rows (created on first sight; a URL changed in
   feeds.yaml resets the stored URL and validators). Sources resting after failures
   (``next_attempt_at`` in the future) are skipped unless forced (``--all``): :func:`.is_due`.
2. All due sources are fetched concurrently through a :class:`~.fetch.Fetcher` (bounded
   overall and per host). Each result goes on a bounded queue, so bodies never pile up in
   memory faster than they are stored (:mod:`.pipeline`).
3. One writer thread takes whatever is queued (up to ``WRITE_BATCH`` sources), parses it,
   lets the pure :class:`~.decide.Decider` sort entries into new / changed / unchanged, links
   near-identical stories (:class:`~.stories.StoryIndex`) and writes the lot in one
   transaction (:mod:`.writer`). If a batch fails to store, its sources are retried one by
   one, so one bad source cannot cost the others their items.
4. Every failure ends as that source's error (``FetchReport.failures``) and its health
   (consecutive failures, last error, next attempt); nothing a source does crashes the run.

A 304 (or an unchanged file) costs one request and one row update: no parsing at all.

Cut for a work queue (many workers, issue 13): :func:`due_source_ids` lists the due sources
without fetching anything; the queue cuts them into batches, and each batch job runs
``run_fetch(..., source_ids=batch, only_due=True)``. A batch may wait in the queue while
another worker (or a console ``fetch``) fetches one of its sources; ``only_due`` makes the job
fetch only what is still due when it runs, and claims each source in the database first, so of
two jobs holding the same source at once only one fetches it (see :func:`fetched_meanwhile`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from newsexchange.config import Config, SourceSettings
from newsexchange.db import Database, Source
from newsexchange.db.queries.sources import claim_source, insert_sources, load_sources
from newsexchange.errors import ConfigError
from newsexchange.ingest.decide import SourceState, is_due
from newsexchange.ingest.fetch import Fetcher
from newsexchange.ingest.pipeline import fetch_all, run_coroutine
from newsexchange.ingest.report import FetchReport, Progress, SourceOutcome

__all__ = ["due_source_ids", "fetched_meanwhile", "run_fetch"]

log = logging.getLogger("newsexchange.ingest")

#: With ``only_due``, a source fetched less than this share of ``fetch.interval_minutes`` ago
#: counts as fetched meanwhile. Half, the service's own rule for the whole fetch job (its
#: ``min_gap`` is half the interval, service/jobs.py): scheduled fires are at least 3/4 of the
#: interval apart (the jitter is at most a quarter), so a batch still fetches a source last
#: fetched at the slot before unless that batch ran more than a quarter interval late. A job
#: given its planner's ``now`` skips every source fetched since it was planned however long it
#: waited; given its own clock, those fetched within the last half interval.
FRESH_SHARE = 0.5


def due_source_ids(db: Database, config: Config, *, now: datetime) -> list[str]:
    """The ids of the enabled sources that :func:`run_fetch` would fetch now (not resting
    after failures: :func:`.is_due` on the stored state), in feeds.yaml order, without fetching
    anything. The queue's planner cuts this list into batch jobs. Creates the rows of sources
    seen for the first time and follows URLs changed in feeds.yaml, exactly as a fetch run
    does, so the answer is the one that run would act on."""
    selected = _select(config, None)
    states = _sync_sources(db, selected)
    return [s.id for s in selected if is_due(states[s.id], now)]


def fetched_meanwhile(
    last_fetched_at: datetime | None, now: datetime, *, interval_minutes: float
) -> bool:
    """Was this source fetched since a batch holding it was planned? True when its last fetch
    (success or failure: both stamp ``last_fetched_at``) is later than ``now`` less
    :data:`FRESH_SHARE` of the interval, or later than ``now`` itself (a job given its
    planner's ``now`` while a newer run already went through)."""
    if last_fetched_at is None:
        return False
    return last_fetched_at > now - timedelta(minutes=interval_minutes * FRESH_SHARE)


def run_fetch(
    db: Database,
    config: Config,
    *,
    now: datetime,
    source_ids: Sequence[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    fetcher: Fetcher | None = None,
    only_due: bool = False,
) -> FetchReport:
    """Fetch the due sources (or ``source_ids``; all of them with ``force``) and store their
    items. Safe to run again: unchanged items are left alone.

    ``source_ids`` alone means "fetch these even if not due" (the console's ``fetch ID``).
    With ``only_due`` (a queue's batch job) only those of them still due are fetched: not
    resting, not fetched meanwhile (:func:`fetched_meanwhile`), and claimed by this run in the
    database; the rest are reported ``skipped``. ``only_due`` with ``force`` is a contradiction
    and refused."""
    if only_due and force:
        raise ValueError("run_fetch: only_due and force exclude each other")
    started = time.perf_counter()
    selected = _select(config, source_ids, only_due=only_due)
    states = _sync_sources(db, selected)
    forced = force or (bool(source_ids) and not only_due)
    due = [s for s in selected if is_due(states[s.id], now, force=forced)]
    if only_due:
        due = _claim(db, config, due, states, now)
    due_ids = {s.id for s in due}
    skipped = [_skipped(s, states[s.id]) for s in selected if s.id not in due_ids]
    total = len(selected)
    done = 0
    if progress:
        for o in skipped:
            done += 1
            progress(o, done, total)
    outcomes: list[SourceOutcome] = []
    if due:
        outcomes = run_coroutine(
            fetch_all(
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
    report = FetchReport(
        outcomes=_in_config_order(selected, states, [*skipped, *outcomes]),
        elapsed_seconds=time.perf_counter() - started,
    )
    _log_report(report)
    return report


def _claim(
    db: Database,
    config: Config,
    due: list[SourceSettings],
    states: dict[str, SourceState],
    now: datetime,
) -> list[SourceSettings]:
    """The sources of ``due`` this run may fetch: re-read, still due, not fetched meanwhile,
    and claimed by stamping ``last_fetched_at`` with ``now`` only where it still holds the
    value just read (a compare-and-set). Two workers claiming one source at once: on
    PostgreSQL the second UPDATE waits for the first's commit and then matches no row; SQLite
    takes its write lock at BEGIN, so they queue. Ids go in sorted order, so two batches that
    share sources lock them in one order and cannot deadlock. ``states`` is refreshed with
    what was re-read. A worker that dies after claiming leaves the stamp: the source waits
    out :data:`FRESH_SHARE` of its interval, as if it had been fetched."""
    if not due:
        return []
    interval = config.fetch.interval_minutes
    claimed: set[str] = set()
    with db.session() as s:
        rows = load_sources(s, [src.id for src in due])
        for sid in sorted(rows):
            row = rows[sid]
            state = _state(row)
            states[sid] = state
            if not is_due(state, now) or fetched_meanwhile(
                row.last_fetched_at, now, interval_minutes=interval
            ):
                continue
            if claim_source(s, sid, seen=row.last_fetched_at, now=now):
                claimed.add(sid)
    return [src for src in due if src.id in claimed]


def _in_config_order(
    selected: list[SourceSettings], states: dict[str, SourceState], outcomes: list[SourceOutcome]
) -> list[SourceOutcome]:
    by_id = {o.source: o for o in outcomes}
    missing = SourceOutcome  # a source with no outcome would be a bug; report it, not crash
    return [
        by_id.get(s.id)
        or missing(s.id, states[s.id].url, "failed", error="internal error: no result")
        for s in selected
    ]


def _skipped(src: SourceSettings, state: SourceState) -> SourceOutcome:
    return SourceOutcome(
        source=src.id,
        url=state.url,
        status="skipped",
        error=state.last_error,
        next_attempt_at=state.next_attempt_at,
    )


def _log_report(report: FetchReport) -> None:
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


def _select(
    config: Config, source_ids: Sequence[str] | None, *, only_due: bool = False
) -> list[SourceSettings]:
    """The sources a run covers. Ids asked for by name must exist, except in a queued batch
    (``only_due``): it was planned from the feeds.yaml of another process or of before a
    reload, so a source removed or disabled since is no longer due and is left out (logged),
    where failing the job would only have it retried with the same ids."""
    if not source_ids:
        return [s for s in config.sources if s.enabled]
    known = {s.id: s for s in config.sources}
    unknown = [sid for sid in source_ids if sid not in known]
    if only_due:
        gone = [*unknown, *(sid for sid in source_ids if sid in known and not known[sid].enabled)]
        if gone:
            log.info("batch sources no longer in feeds.yaml or disabled", extra={"sources": gone})
        return [known[sid] for sid in dict.fromkeys(source_ids) if sid not in gone]
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
        watched_since=row.watched_since,
    )


def _sync_sources(db: Database, selected: list[SourceSettings]) -> dict[str, SourceState]:
    """Make sure every selected source has its row; follow URL changes made in feeds.yaml."""
    out: dict[str, SourceState] = {}
    ids = [s.id for s in selected]
    with db.session() as s:
        rows = load_sources(s, ids)
        missing = [
            {"id": src.id, "config_url": src.url, "url": src.url, "consecutive_failures": 0}
            for src in selected
            if src.id not in rows
        ]
        if missing:
            insert_sources(s, missing)
            rows = load_sources(s, ids)
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
