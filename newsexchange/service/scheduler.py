"""The APScheduler half of ``newsexchange serve``: a stored schedule reconciled with
feeds.yaml, each run handed to the :class:`~newsexchange.service.runner.Runner`."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING

from newsexchange.config import Config
from newsexchange.db import Database, utcnow
from newsexchange.db.queries.jobs import JOBSTORE_CREATE_RACE, JOBSTORE_TABLE
from newsexchange.service.demo import prepare_demo
from newsexchange.service.jobs import job_specs
from newsexchange.service.runner import Runner, RunOutcome

__all__ = ["Service", "run_scheduled"]

log = logging.getLogger("newsexchange.service")

#: What the job store keeps for every job: jobs are pickled with a reference to this callable
#: (re-exported by the package, so stored jobs of earlier versions still load).
JOB_FUNC = "newsexchange.service:run_scheduled"

# Which Service a scheduler worker thread belongs to. Jobs in the job store are pickled, so
# they carry only the job id; the worker threads of each Service's executor are bound to it
# by the pool's initializer (two services in one process stay apart, as in the tests).
_local = threading.local()


def _bind_worker(service: Service) -> None:
    _local.service = service


def run_scheduled(job_id: str, spec: str = "", min_gap: float = 0.0) -> None:
    """The callable stored in the job store (``newsexchange.service:run_scheduled``)."""
    service: Service | None = getattr(_local, "service", None)
    if service is None:
        log.error("scheduled job ran outside a service worker", extra={"job": job_id})
        return
    service.run_job(job_id, min_gap=min_gap)


class _Scheduler(BackgroundScheduler):  # type: ignore[misc]
    """APScheduler's BackgroundScheduler, minus one surprise: ``shutdown()`` wakes the
    scheduler thread for a last pass *after* setting the state to stopped, and that pass
    (which only skips a *paused* scheduler) advances the next run time of every due job
    without running it — a slot silently lost at every stop. Only a running scheduler
    processes jobs here, so a slot due at stop time is still due at the next start."""

    def _process_jobs(self) -> Any:
        if self.state != STATE_RUNNING:
            return None
        return super()._process_jobs()


class Service:
    """The scheduler half of ``newsexchange serve`` (the web app is the other half)."""

    def __init__(
        self,
        config: Config,
        db: Database,
        *,
        owner: str | None = None,
        lock_ttl: float | None = None,
        workers: int = 3,
        dispatch: Callable[[str, float], bool] | None = None,
    ) -> None:
        """``dispatch(job_id, min_gap)``, given on PostgreSQL, is called instead of running a
        fired job here (it defers the job to the work queue, :mod:`.queue`, and says whether
        it was queued); the queue's worker then runs it and what follows it."""
        self.config = config
        self.dispatch = dispatch
        self.db = db
        self.runner = Runner(config, db, owner=owner, lock_ttl=lock_ttl)
        self._stopping = threading.Event()
        #: The latest attempts of scheduled runs (including skipped ones), newest last.
        self.history: collections.deque[RunOutcome] = collections.deque(maxlen=200)
        self.scheduler = _Scheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=db.engine, tablename=JOBSTORE_TABLE)},
            executors={
                "default": ThreadPoolExecutor(
                    workers, pool_kwargs={"initializer": _bind_worker, "initargs": (self,)}
                )
            },
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone=UTC,
        )

    @property
    def owner(self) -> str:
        return self.runner.owner

    def start(self) -> None:
        """Start the scheduler: reconcile the stored jobs with feeds.yaml, then run what is due
        (each missed job once)."""
        if self.config.service.demo:
            self._prepare_demo()
        self._start_paused()
        self.scheduler.resume()
        log.info(
            "service started",
            extra={"jobs": len(self.scheduler.get_jobs()), "owner": self.owner},
        )

    def _start_paused(self) -> None:
        # The job store's table is created by APScheduler itself on first start; two
        # processes starting at once may race on that CREATE, so retry once.
        for attempt in range(3):
            try:
                self.scheduler.start(paused=True)
                break
            except JOBSTORE_CREATE_RACE:
                if attempt == 2:
                    raise
                time.sleep(0.5)
        self.reconcile()

    def reconcile(self) -> dict[str, str]:
        """Make the stored jobs match feeds.yaml; returns what happened per job id."""
        now = utcnow()
        wanted = {spec.id: spec for spec in job_specs(self.config)}
        stored = {job.id: job for job in self.scheduler.get_jobs()}
        result: dict[str, str] = {}
        for job_id in stored:
            if job_id not in wanted:
                self.scheduler.remove_job(job_id)
                result[job_id] = "removed"
        for job_id, spec in wanted.items():
            old = stored.get(job_id)
            if old is not None and old.kwargs.get("spec") == spec.spec:
                result[job_id] = "kept"
                continue
            first = spec.trigger.get_next_fire_time(None, now)
            if old is not None and old.next_run_time is not None:
                first = min(first, old.next_run_time)  # a missed slot stays missed → runs now
            elif old is None and spec.run_at_start:
                first = now
            self.scheduler.add_job(
                JOB_FUNC,
                trigger=spec.trigger,
                id=job_id,
                name=job_id,
                kwargs={"job_id": job_id, "spec": spec.spec, "min_gap": spec.min_gap},
                replace_existing=True,
                next_run_time=first,
            )
            result[job_id] = "replaced" if old is not None else "added"
        log.info("schedule reconciled", extra={"jobs": result})
        return result

    def run_job(self, job_id: str, *, min_gap: float = 0.0) -> RunOutcome | None:
        if self._stopping.is_set():
            return None
        if self.dispatch is not None:
            queued = self.dispatch(job_id, min_gap)
            outcome = RunOutcome(
                job_id,
                "queued" if queued else "skipped",
                error=None if queued else "already queued",
            )
            self.history.append(outcome)
            return outcome
        outcome = self.runner.run(job_id, min_gap=min_gap)
        self.history.append(outcome)
        # Translate after each fetch (even a partly failed one: what came in is worth
        # translating); approval requests right after a digest is built.
        if job_id == "fetch" and outcome.status in ("ok", "failed"):
            if not self._stopping.is_set():
                self.runner.run("translate")
            # Pick-ups: the receiving side's new items against the sent digests' stories.
            if not self._stopping.is_set():
                self.runner.run("impact")
            # The demo: build the period in progress as soon as its items are in, and ask
            # for approval (a real exchange waits for the schedule).
            if (
                self.config.service.demo
                and not self._stopping.is_set()
                and self.runner.run("demo").summary.get("built")
            ):
                self.runner.run("approvals")
        elif (
            job_id.startswith("digest:")
            and outcome.status == "ok"
            and outcome.summary.get("built")
            and not self._stopping.is_set()
        ):
            self.runner.run("approvals")
        return outcome

    def begin_shutdown(self) -> None:
        """Stop taking new runs at once (the signal handler calls this)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.runner.stopping.set()
        with contextlib.suppress(Exception):
            self.scheduler.pause()
        log.info("service stopping: no new jobs")

    def stop(self, *, wait: bool = True) -> None:
        """Wait for the running steps to finish, then stop the scheduler."""
        self.begin_shutdown()
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=wait)
        log.info("service stopped")

    def _prepare_demo(self) -> None:
        try:
            report = prepare_demo(self.config, self.db, now=utcnow())
            log.info("demo mode: sample data loaded", extra=report)
        except Exception:
            log.warning("demo preparation failed", exc_info=True)
