"""A procrastinate worker that runs the service's jobs (PostgreSQL only; see :mod:`.queue`).

Every ``newsexchange worker`` and ``newsexchange serve`` process runs one
:class:`QueueWorker`: procrastinate's worker on an event loop of its own (the main thread of
``worker``, a thread of ``serve``), running our sync tasks in threads (up to
``service.queue_concurrency`` jobs at once).

**Death noticed in seconds, on any host.** The worker writes a heartbeat every
``service.heartbeat_seconds`` (2); a reaper in every worker looks every
``service.reaper_seconds`` (3) for jobs in ``doing`` whose worker has sent none for
``service.stalled_seconds`` (10) and puts them back (procrastinate's "retry stalled jobs"
recipe). So a shard of a ``kill -9``-ed worker is taken by another within about 15 s; its
claimed rows are taken over at once on the same host (dead pid), and on another host when the
claims' heartbeat stops renewing them (delivery/). Two reapers retrying the same job is
harmless: the second finds it no longer ``doing`` and gets an error, which is ignored. A
stalled job whose twin already waits (queued again by a scheduler or the send plan) cannot go
back to ``todo`` (queueing lock): it is closed as failed instead, and the twin runs.

**A clean stop.** :meth:`QueueWorker.stop` (SIGTERM) stops taking jobs and lets the running
ones end: a shard stops after the chunk on the wire, hands its unsent claims back and is put
back on the queue at once (a new job), for another worker to finish.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from newsexchange.config import Config, database_url
from newsexchange.db import Database, utcnow
from newsexchange.db.queries import jobs as job_queries
from newsexchange.delivery.send import run_send
from newsexchange.delivery.shards import plan_shards
from newsexchange.errors import StopRequested
from newsexchange.ingest import due_source_ids, run_fetch
from newsexchange.service.jobs import JOB_RUNS_KEEP_DAYS
from newsexchange.service.queue import (
    TASK_FETCH,
    TASK_SHARD,
    TASK_STEP,
    TASK_TRANSLATE,
    Deferrer,
    conninfo,
)
from newsexchange.service.reports import StepResult, report_json
from newsexchange.service.runner import JobBusy, Runner, RunOutcome
from newsexchange.translate import pending_ranges, run_translate

if TYPE_CHECKING:
    from procrastinate import App

__all__ = ["PRUNE_FINISHED_HOURS", "QueueWorker"]

#: A ``retry_at`` / ``schedule_at`` in the past: due at once on the database's clock.
DUE_NOW = datetime(2000, 1, 1, tzinfo=UTC)

#: Succeeded jobs stay in the queue's table this long (``newsexchange jobs`` counts them).
PRUNE_FINISHED_HOURS = 24

log = logging.getLogger("newsexchange.service")


class QueueWorker:
    """One process's procrastinate worker, with the tasks bound to this config and database."""

    def __init__(
        self,
        config: Config,
        db: Database,
        *,
        concurrency: int | None = None,
        name: str | None = None,
        deferrer: Deferrer | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.settings = config.service
        self.concurrency = concurrency or self.settings.queue_concurrency
        self.deferrer = deferrer or Deferrer(config)
        # On the queue, three steps plan instead of doing: each defers its units (a batch of
        # due sources, a range of items, a shard of a send) for any worker to take.
        self.runner = Runner(
            config,
            db,
            steps={
                "fetch": self._plan_fetch,
                "translate": self._plan_translate,
                "send": self._plan_send,
            },
            raise_when_busy=True,
        )
        self.name = name or self.runner.owner
        #: Set by :meth:`stop`: shards end after their chunk in hand.
        self.stopping = self.runner.stopping
        #: What this worker did: jobs per task and outcome, messages sent.
        self.done: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._stop_requested = False
        self.app = self._build_app()

    # -- the tasks -------------------------------------------------------------------------

    def _build_app(self) -> App:
        from procrastinate import App, PsycopgConnector

        app = App(
            connector=PsycopgConnector(
                conninfo=conninfo(database_url(self.config)),
                min_size=1,
                max_size=self.concurrency + 2,
            )
        )
        # Put back as *new* jobs, not procrastinate's in-place retries: a retry moves the job
        # back to "todo", which its queueing lock forbids while a twin already waits there
        # (the scheduler or the send plan queued the unit again meanwhile) — the retry then
        # fails and the job stays "doing", its lock blocking the twin for good.

        def step(job_id: str, min_gap: float = 0.0, attempt: int = 0) -> None:
            self.run_step(job_id, min_gap=min_gap, attempt=attempt)

        def send_shard(digest_id: int, first: int, last: int) -> None:
            self.run_shard(digest_id, first, last)

        def fetch_batch(source_ids: list[str], planned_at: str) -> None:
            self.run_fetch_batch(source_ids, datetime.fromisoformat(planned_at))

        def translate_range(first: int, last: int) -> None:
            self.run_translate_range(first, last)

        app.task(name=TASK_STEP)(step)
        app.task(name=TASK_SHARD)(send_shard)
        app.task(name=TASK_FETCH)(fetch_batch)
        app.task(name=TASK_TRANSLATE)(translate_range)
        return app

    def run_step(self, job_id: str, *, min_gap: float = 0.0, attempt: int = 0) -> RunOutcome:
        """One service job through the :class:`Runner`, then what follows it, as
        :meth:`Service.run_job` does in process.

        A job whose lease is held elsewhere is put back on the queue every
        ``busy_retry_seconds`` until the lease must have expired (its holder may be dead on
        another host), then given up (a live holder is running that slot)."""
        try:
            outcome = self.runner.run(job_id, min_gap=min_gap)
        except JobBusy:
            wait = self.settings.busy_retry_seconds
            tries = int(self.settings.lock_ttl_seconds // wait) + 3
            if attempt + 1 < tries and not self.stopping.is_set():
                self.deferrer.step(job_id, min_gap=min_gap, delay=wait, attempt=attempt + 1)
                self._count("step:busy")
                return RunOutcome(job_id, "skipped", error="lease held elsewhere: queued again")
            self._count("step:busy-gave-up")
            return RunOutcome(job_id, "skipped", error="lease held elsewhere")
        self._count(f"step:{outcome.status}")
        follow: list[str] = []
        if job_id == "fetch" and outcome.status in ("ok", "failed"):
            # Each fetch batch queues the translation when it is done; with no batch to
            # wait for, it follows the plan (translations put off earlier are retried after
            # every fetch, as in process).
            if not outcome.summary.get("batches"):
                follow.append("translate")
        elif job_id == "translate" and outcome.status in ("ok", "failed"):
            # Pick-ups follow the translation plan (they need no translation of the new
            # items: the story's carried text and its original are compared).
            follow.append("impact")
            # The demo builds once what is translated: after the translation, as in process
            # (each range queues it when done; with no range, the plan does).
            if self.config.service.demo and not outcome.summary.get("ranges"):
                follow.append("demo")
        elif (
            (job_id.startswith("digest:") or job_id == "demo")
            and outcome.status == "ok"
            and outcome.summary.get("built")
        ):
            follow.append("approvals")
        for nxt in follow:
            if not self.stopping.is_set():
                self.deferrer.step(nxt)
        return outcome

    def _plan_fetch(
        self, config: Config, db: Database, now: datetime, arg: str | None
    ) -> StepResult:
        """The "fetch" step on the queue: the due sources, one job per batch of
        ``service.fetch_batch`` (each fetches what is still due when it runs)."""
        due = due_source_ids(db, config, now=now)
        size = config.service.fetch_batch
        batches = [due[i : i + size] for i in range(0, len(due), size)]
        queued = sum(1 for b in batches if self.deferrer.fetch_batch(b, planned_at=now.isoformat()))
        return {"due": len(due), "batches": len(batches), "queued": queued}

    def run_fetch_batch(self, source_ids: list[str], planned_at: datetime) -> None:
        """Fetch one batch, recorded as a ``fetch`` run; then queue the translation. ``planned_at`` is the plan's time: a source fetched since then by
        anyone is left alone."""
        run_id = job_queries.start_run(self.db, "fetch", now=utcnow())
        ok, error, summary = True, None, {}
        try:
            report = run_fetch(
                self.db, self.config, now=planned_at, source_ids=source_ids, only_due=True
            )
            summary = report_json(report)
        except Exception as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
            log.error("fetch batch failed", extra={"error": error}, exc_info=True)
        job_queries.close_run(
            self.db, run_id, finished_at=utcnow(), ok=ok, error=error, summary=summary
        )
        self._count("fetch:done" if ok else "fetch:failed")
        if not self.stopping.is_set():
            self.deferrer.step("translate")

    def _plan_translate(
        self, config: Config, db: Database, now: datetime, arg: str | None
    ) -> StepResult:
        """The "translate" step on the queue: one job per range of items with work."""
        ranges = pending_ranges(db, config, now=now)
        queued = sum(1 for first, last in ranges if self.deferrer.translate_range(first, last))
        return {"ranges": len(ranges), "queued": queued}

    def run_translate_range(self, first: int, last: int) -> None:
        report = run_translate(self.db, self.config, now=utcnow(), id_range=(first, last))
        self._count("translate:done")
        if self.config.service.demo and not self.stopping.is_set():
            self.deferrer.step("demo")  # the demo's build follows the translation
        log.info(
            "translation range done",
            extra={"range": f"{first}-{last}", "items_translated": report.items_translated},
        )

    def _plan_send(
        self, config: Config, db: Database, now: datetime, arg: str | None
    ) -> StepResult:
        """The "send" step on the queue: queue the approved digests' deliveries and defer one
        shard job per ``service.send_shard_size`` deliveries (recorded in job_runs as the
        ``send`` run; the shards' own sends are logged per shard)."""
        shards = plan_shards(db, config, now=now, size=config.service.send_shard_size)
        queued = sum(1 for shard in shards if self.deferrer.shard(shard))
        return {
            "shards": len(shards),
            "queued": queued,
            "open": sum(shard.open for shard in shards),
            "digests": sorted({shard.digest_id for shard in shards}),
        }

    def run_shard(self, digest_id: int, first: int, last: int) -> None:
        """Send one shard; on a stop, hand it back to the queue (a new job of it)."""
        stopping = self.stopping
        sent_before_stop = [0]

        def progress(done: int, total: int) -> None:
            sent_before_stop[0] = done
            if stopping.is_set() and done < total:
                raise StopRequested(f"stopped after {done} of {total} deliveries")

        try:
            report = run_send(
                self.db,
                self.config,
                now=utcnow(),
                digest_id=digest_id,
                id_range=(first, last),
                progress=progress,
            )
        except StopRequested:
            # Its unsent claims were handed back (run_send); the shard goes back on the queue
            # for another worker (or is already waiting there).
            self.deferrer.shard_range(digest_id, first, last)
            self._count("shard:stopped")
            self._count("sent", sent_before_stop[0])  # handed to the server before the stop
            log.info("shard handed back on stop", extra={"shard": f"send:{digest_id}:{first}"})
            return
        if report.error:  # the backend is unusable: the next "send" plan queues it again
            log.error("shard failed", extra={"shard": f"send:{digest_id}:{first}",
                                             "error": report.error})  # fmt: skip
        self._count("shard:done")
        self._count("sent", report.sent)
        log.info(
            "shard sent",
            extra={"shard": f"send:{digest_id}:{first}", "sent": report.sent,
                   "failed": report.failed_permanent + report.failed_retrying, "seconds": round(report.elapsed, 3)},
        )  # fmt: skip

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.done[key] += n

    # -- running -------------------------------------------------------------------------

    def run(self) -> None:
        """Run the worker until :meth:`stop` (blocking; an event loop of its own)."""
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        if self._stop_requested:
            return
        async with self.app.open_async():
            reaper = asyncio.create_task(self._reap(), name="newsexchange stalled-job reaper")
            try:
                await self.app.run_worker_async(
                    name=self.name,
                    concurrency=self.concurrency,
                    install_signal_handlers=False,
                    update_heartbeat_interval=self.settings.heartbeat_seconds,
                    stalled_worker_timeout=self.settings.stalled_seconds,
                    fetch_job_polling_interval=1.0,
                    wait=True,
                )
            except asyncio.CancelledError:
                pass  # our stop(): the worker has let its running jobs finish
            finally:
                reaper.cancel()
                await _jobs_still_running()
        log.info("queue worker stopped", extra={"worker": self.name, **self.report()})

    async def prune(self) -> None:
        """Delete finished jobs from the queue's table, which would otherwise grow by every
        fetch batch and shard forever: succeeded (and cancelled, aborted) ones a day after
        they ended, failed ones after ``JOB_RUNS_KEEP_DAYS`` (what happened stays in
        ``job_runs`` and the log)."""
        manager = self.app.job_manager
        await manager.delete_old_jobs(
            nb_hours=PRUNE_FINISHED_HOURS, include_cancelled=True, include_aborted=True
        )
        # failed only: the others were just deleted at a shorter age
        await manager.delete_old_jobs(nb_hours=24 * JOB_RUNS_KEEP_DAYS, include_failed=True)

    async def _reap(self) -> None:
        """Put back the jobs of workers that stopped sending heartbeats (dead on any host);
        once an hour, prune finished jobs."""
        manager = self.app.job_manager
        next_prune = 0.0
        while True:
            await asyncio.sleep(self.settings.reaper_seconds)
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + 3600
                try:
                    await self.prune()
                except Exception:
                    log.warning("pruning finished jobs failed", exc_info=True)
            try:
                stalled = list(
                    await manager.get_stalled_jobs(
                        seconds_since_heartbeat=self.settings.stalled_seconds
                    )
                )
            except Exception:
                log.warning("looking for stalled jobs failed", exc_info=True)
                continue
            for job in stalled:
                try:
                    # Due at once by the database's clock, whatever this host's clock says
                    # (procrastinate's default is this host's "now": a host whose clock is
                    # ahead would put the job off by as much).
                    await manager.retry_job(job, retry_at=DUE_NOW)
                except Exception:
                    # Another worker's reaper was first (no longer "doing"), or a twin of the
                    # job already waits in "todo" (queueing lock): then this one is closed as
                    # failed, so its lock no longer holds the twin back.
                    await self._close_stalled(job.id)
                    continue
                log.warning(
                    "stalled job put back on the queue",
                    extra={"job_id": job.id, "task": job.task_name, "lock": job.lock},
                )

    async def _close_stalled(self, job_id: int | None) -> None:
        from procrastinate.jobs import Status

        if job_id is None:
            return
        manager = self.app.job_manager
        with contextlib.suppress(Exception):  # not "doing" any more: nothing to close
            # Only a job still "doing": one another reaper just put back is "todo" and must
            # stay so (a twin would have made that reaper's retry fail too).
            if await manager.get_job_status_async(job_id) != Status.DOING:
                return
            await manager.finish_job_by_id_async(job_id, status=Status.FAILED, delete_job=False)
            log.warning("stalled job closed: its twin is queued", extra={"job_id": job_id})

    def stop(self) -> None:
        """Stop taking jobs; running ones end their chunk (safe from any thread or a signal
        handler)."""
        with self._lock:
            if self._stop_requested:  # a second cancel would cut the graceful stop short
                return
            self._stop_requested = True
        self.stopping.set()
        loop, main = self._loop, self._main
        if loop is not None and main is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(_cancel, main)

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {"worker": self.name, "done": dict(self.done), "sent": self.done["sent"]}

    def close(self) -> None:
        self.deferrer.close()


def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()


async def _jobs_still_running() -> None:
    """Wait for jobs procrastinate started as it was stopping.

    Its worker waits for the jobs running when its shutdown begins, but a job fetched in that
    same moment (a NOTIFY had woken the fetcher) starts after, and would find the pool
    closed under it ("AppNotOpen" when it records its end, the job left ``doing`` until a
    reaper puts it back). procrastinate names those tasks ``process job …``.
    """
    me = asyncio.current_task()
    late = [
        t
        for t in asyncio.all_tasks()
        if t is not me and not t.done() and t.get_name().startswith("process job")
    ]
    if late:
        await asyncio.wait(late)
