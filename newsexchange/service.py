"""The background service: APScheduler jobs wired to the steps, one lease per job, every run
recorded.

The scheduler only decides *when* a step runs; the steps are the same functions the CLI
calls (``run_fetch``, ``run_translate``, ``build_digest``, ``run_approvals``, ``poll_imap``,
``run_send``, :func:`newsexchange.alerts.check_alerts`). What this module adds:

- **A schedule that survives restarts.** Jobs live in APScheduler's SQLAlchemy job store in
  the project's own database (table ``apscheduler_jobs``). On start the stored jobs are
  reconciled with feeds.yaml: a job whose schedule did not change is *kept*, with its stored
  next run time, so a slot missed while the service was down is still due. Every job has
  ``coalesce=True`` and ``misfire_grace_time=None``: however many slots were missed, the job
  runs once on start, however late (a digest build missed by two days must still happen).
- **Never the same job twice.** APScheduler 3 does not coordinate schedulers that share a job
  store (its docs say so), so two service processes on one database could both pick a due
  job. Every run therefore takes a lease in the ``locks`` table first — acquired with one
  conditional UPDATE (or an INSERT that the primary key lets only one writer win), renewed
  while the step runs, released at the end — and, holding it, skips the run when the same job
  already started within half its interval (the other process ran this slot). A lease whose
  owner process is dead on this host is taken over at once, so a restart after ``kill -9``
  does not wait for the lease to expire.
- **A record of every run** in ``job_runs`` (start, finish, ok, error, the step's JSON
  report), which ``/readyz`` and ``/metrics`` read.
- **Steps plug in as they exist.** A step is looked up by module and function name only when
  it runs; one that cannot be imported is logged (once) as unavailable and the service carries
  on with the others.
- **A clean stop.** :meth:`Service.begin_shutdown` pauses the scheduler (no new runs);
  :meth:`Service.stop` waits for the running steps to finish. A send in progress finishes its
  current batch; rows it had not claimed stay pending for the next start.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from newsexchange.config import Config
from newsexchange.db import Database, Digest, JobRun, Lock, utcnow

log = logging.getLogger(__name__)

JOBSTORE_TABLE = "apscheduler_jobs"
#: How long job_runs are kept (they feed /metrics and /readyz; a month is plenty).
JOB_RUNS_KEEP_DAYS = 30


# -- leases (the `locks` table) ------------------------------------------------------------


def make_owner() -> str:
    """This process's lease-owner name: ``host:pid:random`` (the pid lets a restarted service
    on the same host recognise a lease left behind by a dead process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_is_dead(owner: str) -> bool:
    """Whether ``owner`` names a process on this host that no longer exists."""
    try:
        host, pid_s, _tag = owner.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


def acquire_lock(db: Database, name: str, owner: str, *, ttl: float, now: datetime) -> bool:
    """Take the lease ``name`` for ``ttl`` seconds; True when this owner now holds it.

    Atomic on SQLite and PostgreSQL: the UPDATE succeeds only when the lease is free (expired)
    or already ours; when no row exists, the INSERT succeeds for exactly one writer (primary
    key). A lease held by a dead process on this host is taken over with an UPDATE that names
    the dead owner, so two survivors cannot both take it.
    """
    expires = now + timedelta(seconds=ttl)
    with db.session() as s:
        res = s.execute(
            update(Lock)
            .where(Lock.name == name, (Lock.expires_at < now) | (Lock.owner == owner))
            .values(owner=owner, expires_at=expires)
        )
        if res.rowcount == 1:  # type: ignore[attr-defined]
            return True
    try:
        with db.session() as s:
            s.execute(insert(Lock).values(name=name, owner=owner, expires_at=expires))
        return True
    except IntegrityError:
        pass
    with db.session() as s:
        holder = s.scalar(select(Lock.owner).where(Lock.name == name))
    if holder and _owner_is_dead(holder):
        with db.session() as s:
            res = s.execute(
                update(Lock)
                .where(Lock.name == name, Lock.owner == holder)
                .values(owner=owner, expires_at=expires)
            )
            if res.rowcount == 1:  # type: ignore[attr-defined]
                log.warning("lease taken over from a dead process", extra={"lock": name})
                return True
    return False


def renew_lock(db: Database, name: str, owner: str, *, ttl: float, now: datetime) -> bool:
    """Extend our lease; False when it is no longer ours (it expired and someone took it)."""
    with db.session() as s:
        res = s.execute(
            update(Lock)
            .where(Lock.name == name, Lock.owner == owner)
            .values(expires_at=now + timedelta(seconds=ttl))
        )
        return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def release_lock(db: Database, name: str, owner: str) -> None:
    with db.session() as s:
        s.execute(delete(Lock).where(Lock.name == name, Lock.owner == owner))


@contextlib.contextmanager
def lease(db: Database, name: str, owner: str, *, ttl: float) -> Iterator[bool]:
    """Hold the lease ``name`` while the block runs, renewing it every ``ttl / 3`` seconds.

    Yields whether it was acquired; the block must do nothing when it was not.
    """
    if not acquire_lock(db, name, owner, ttl=ttl, now=utcnow()):
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            try:
                if not renew_lock(db, name, owner, ttl=ttl, now=utcnow()):
                    log.error("lease lost while running", extra={"lock": name})
                    return
            except Exception:  # a database hiccup: try again at the next tick
                log.warning("lease renewal failed", extra={"lock": name}, exc_info=True)

    renewer = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join(timeout=5)
        try:
            release_lock(db, name, owner)
        except Exception:  # it expires on its own
            log.warning("lease release failed", extra={"lock": name}, exc_info=True)


# -- steps ---------------------------------------------------------------------------------


class StepUnavailable(Exception):
    """A step's module or function does not exist (yet) in this installation."""


def _resolve(module: str, attr: str) -> Callable[..., Any]:
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise StepUnavailable(f"{module}.{attr}: {exc}") from exc
    if not callable(fn):
        raise StepUnavailable(f"{module}.{attr} is not callable")
    return fn  # type: ignore[no-any-return]


def report_json(report: Any) -> dict[str, Any]:
    """A step's report as the JSON object ``--json`` would print."""
    if report is None:
        return {}
    if hasattr(report, "to_json"):
        data = report.to_json()
        return data if isinstance(data, dict) else {"result": data}
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        return dataclasses.asdict(report)
    if isinstance(report, dict):
        return report
    if isinstance(report, int | float | str | bool):
        return {"result": report}
    return {"result": str(report)}


def _step_fetch(config: Config, db: Database, now: datetime, arg: str | None) -> Any:
    return _resolve("newsexchange.ingest", "run_fetch")(db, config, now=now)


def _step_translate(config: Config, db: Database, now: datetime, arg: str | None) -> Any:
    return _resolve("newsexchange.translate", "run_translate")(db, config, now=now)


def _step_approvals(config: Config, db: Database, now: datetime, arg: str | None) -> Any:
    return _resolve("newsexchange.approval.notify", "run_approvals")(db, config, now=now)


def _step_imap(config: Config, db: Database, now: datetime, arg: str | None) -> Any:
    if config.mail.imap is None:
        return {"skipped": "mail.imap is not configured"}
    return _resolve("newsexchange.approval.notify", "poll_imap")(db, config, now=now)


class StopRequested(Exception):
    """Raised between two chunks of a send when the service is stopping."""


# The stop flag of the Runner whose step runs in this thread (steps take plain arguments;
# only the send step looks at it).
_run_local = threading.local()


def _step_send(config: Config, db: Database, now: datetime, arg: str | None) -> Any:
    """Dispatch approved digests. On a stop (SIGTERM) the send ends after the chunk in hand:
    every message already handed to the server is marked sent (each chunk commits on its
    own), and the deliveries claimed but not sent stay claimed by this process, which the
    next start takes over at once (their claimer is dead) — nothing half-written, nobody
    mailed twice."""
    stopping: threading.Event | None = getattr(_run_local, "stopping", None)

    def progress(done: int, total: int) -> None:
        if stopping is not None and stopping.is_set() and done < total:
            raise StopRequested(f"stopped after {done} of {total} deliveries")

    return _resolve("newsexchange.delivery.send", "run_send")(
        db, config, now=now, progress=progress
    )


def _step_alerts(config: Config, db: Database, now: datetime, arg: str | None) -> Any:
    from newsexchange.alerts import check_alerts

    report = check_alerts(db, config, now=now)
    _prune_job_runs(db, now)
    return report


def _build_periods(
    config: Config, db: Database, now: datetime, which: str, exchange_id: str | None
) -> dict[str, Any]:
    """Build each exchange's ``due`` (latest completed) or ``current`` period, once.

    A period is built by the service once: when its digest exists already (in any state) it
    is left to the editors (``newsexchange digest build`` rebuilds by hand). A due period is
    built even when it has no item: the approvals step then tells the editors once that it has
    nothing to send and why, instead of asking them to approve it (digest/sendable.py). The
    period in progress (the demo) is built only when it has items.
    """
    from newsexchange.db import Item

    build_digest = _resolve("newsexchange.digest", "build_digest")
    periods = importlib.import_module("newsexchange.digest.periods")
    exchanges = [config.exchange(exchange_id)] if exchange_id else list(config.exchanges)
    built: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for ex in exchanges:
        if which == "current":
            todo = [periods.current_period(ex, config, now)]
        else:
            todo = list(periods.due_periods(ex, config, now))
        for period in todo:
            with db.session() as s:
                state = s.scalar(
                    select(Digest.state).where(
                        Digest.exchange_id == ex.id, Digest.period_start == period.start
                    )
                )
                items = s.scalar(
                    select(func.count())
                    .select_from(Item)
                    .where(
                        Item.region.in_(ex.from_),
                        Item.published_at >= period.starts_at,
                        Item.published_at < period.ends_at,
                    )
                )
            where = {"exchange": ex.id, "period": period.start.isoformat()}
            if state is not None:
                skipped.append({**where, "reason": f"already built ({state})"})
            elif not items and which == "current":
                skipped.append({**where, "reason": "no items in the period"})
            else:
                report = build_digest(db, config, ex.id, period_start=period.start, now=now)
                built.append(report_json(report))
    return {"built": len(built), "digests": built, "skipped": skipped}


def _step_digest(config: Config, db: Database, now: datetime, arg: str | None) -> Any:
    """Build the due digest of one exchange (``arg``), or of every exchange."""
    return _build_periods(config, db, now, "due", arg)


def _step_demo(config: Config, db: Database, now: datetime, arg: str | None) -> Any:
    """``service.demo`` only: build the period *in progress*, so a first run of the offline
    demo shows a whole cycle without waiting for the 1st or the 16th (docs/operations.md)."""
    if not config.service.demo:
        return {"skipped": "service.demo is off"}
    result = _build_periods(config, db, now, "current", arg)
    if result["built"]:
        ids = [d.get("id") for d in result["digests"]]
        log.info(
            "demo: digests built; approve them with the link in the approval mail "
            "(var/outbox/nx-approval.*.eml) or with: newsexchange approve ID",
            extra={"digests": ids},
        )
    return result


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Config, Database, datetime, str | None], Any]


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step("fetch", _step_fetch),
        Step("translate", _step_translate),
        Step("digest", _step_digest),
        Step("demo", _step_demo),
        Step("approvals", _step_approvals),
        Step("imap", _step_imap),
        Step("send", _step_send),
        Step("alerts", _step_alerts),
    )
}

#: ``newsexchange run-once`` order: the data flows one way (ARCHITECTURE.md).
RUN_ONCE_ORDER = ("fetch", "translate", "digest", "demo", "approvals", "imap", "send", "alerts")


def _prune_job_runs(db: Database, now: datetime) -> None:
    with db.session() as s:
        s.execute(
            delete(JobRun).where(JobRun.started_at < now - timedelta(days=JOB_RUNS_KEEP_DAYS))
        )


# -- running one job -----------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What became of one attempt to run a job."""

    job: str
    status: str  # ok | failed | skipped | unavailable | stopped
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 3)}
        if self.summary:
            data["summary"] = self.summary
        if self.error:
            data["error"] = self.error
        return data


class Runner:
    """Runs one job at a time under its lease and records it; shared by the service and
    ``newsexchange run-once`` (so a cron-driven run-once and a service never overlap)."""

    def __init__(
        self,
        config: Config,
        db: Database,
        *,
        owner: str | None = None,
        lock_ttl: float | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.owner = owner or make_owner()
        self.lock_ttl = lock_ttl if lock_ttl is not None else config.service.lock_ttl_seconds
        self._unavailable_logged: set[str] = set()
        #: Set when the service stops: a send in progress ends after its current chunk.
        self.stopping = threading.Event()

    def run(self, job_id: str, *, min_gap: float = 0.0) -> RunOutcome:
        """Run job ``job_id`` (``step`` or ``step:arg``) now, unless another process holds
        its lease or ran it less than ``min_gap`` seconds ago."""
        step_name, _, arg = job_id.partition(":")
        step = STEPS[step_name]
        started = time.monotonic()
        with lease(self.db, f"job:{job_id}", self.owner, ttl=self.lock_ttl) as held:
            if not held:
                log.info("job skipped: running elsewhere", extra={"job": job_id})
                return RunOutcome(job_id, "skipped", error="running in another process")
            now = utcnow()
            if min_gap > 0 and self._ran_recently(job_id, now, min_gap):
                log.info("job skipped: this slot already ran", extra={"job": job_id})
                return RunOutcome(job_id, "skipped", error="already ran for this slot")
            with self.db.session() as s:
                run = JobRun(job=job_id, started_at=now)
                s.add(run)
                s.flush()
                run_id = run.id
            ok, summary, error, status = True, {}, None, "ok"
            _run_local.stopping = self.stopping
            try:
                summary = report_json(step.run(self.config, self.db, now, arg or None))
            except StopRequested as exc:
                status, summary = "stopped", {"stopped": str(exc)}
                log.warning("job stopped for shutdown", extra={"job": job_id, "detail": str(exc)})
            except StepUnavailable as exc:
                status, ok, error = "unavailable", False, str(exc)
            except Exception as exc:
                status, ok, error = "failed", False, f"{type(exc).__name__}: {exc}"
                log.error("job failed", extra={"job": job_id, "error": error}, exc_info=True)
            except BaseException as exc:  # Ctrl-C in run-once: close the record, then go
                with contextlib.suppress(Exception), self.db.session() as s:
                    s.execute(
                        update(JobRun)
                        .where(JobRun.id == run_id)
                        .values(finished_at=utcnow(), ok=False, error=type(exc).__name__)
                    )
                raise
            seconds = time.monotonic() - started
            if status == "unavailable":
                # Not a failure of the service: a part not installed (yet). Say so once and
                # leave no job_runs row, so /metrics and /readyz do not count it as a failure.
                with self.db.session() as s:
                    s.execute(delete(JobRun).where(JobRun.id == run_id))
                if job_id not in self._unavailable_logged:
                    self._unavailable_logged.add(job_id)
                    log.warning("step unavailable", extra={"job": job_id, "error": error})
                return RunOutcome(job_id, status, seconds, {}, error)
            with self.db.session() as s:
                s.execute(
                    update(JobRun)
                    .where(JobRun.id == run_id)
                    .values(finished_at=utcnow(), ok=ok, error=error, summary=summary)
                )
            if status == "ok":
                log.info(
                    "job done",
                    extra={"job": job_id, "seconds": round(seconds, 3), **_brief(summary)},
                )
            return RunOutcome(job_id, status, seconds, summary, error)

    def _ran_recently(self, job_id: str, now: datetime, min_gap: float) -> bool:
        with self.db.session() as s:
            n = s.scalar(
                select(func.count())
                .select_from(JobRun)
                .where(JobRun.job == job_id, JobRun.started_at > now - timedelta(seconds=min_gap))
            )
        return bool(n)


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """Counts only, for the log line: a report's lists (failures, recipients …) stay in
    job_runs, never in the log."""
    return {
        k: v
        for k, v in summary.items()
        if isinstance(v, int | float | bool) and not isinstance(v, str) and k not in ("job", "ok")
    }


# -- the schedule --------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job as feeds.yaml asks for it.

    ``spec`` fingerprints the schedule: a stored job with the same fingerprint is kept as is
    (with its next run time), a changed one is replaced.
    """

    id: str
    trigger: Any  # an APScheduler trigger
    spec: str
    min_gap: float  # seconds; see Runner.run
    run_at_start: bool  # a brand-new job runs at once instead of after one interval


def _interval(minutes: float, jitter: int | None = None) -> Any:
    from apscheduler.triggers.interval import IntervalTrigger

    return IntervalTrigger(seconds=minutes * 60, jitter=jitter or None, timezone=UTC)


def job_specs(config: Config) -> list[JobSpec]:
    """The jobs feeds.yaml asks for (pure: no scheduler, no database)."""
    from apscheduler.triggers.cron import CronTrigger

    svc = config.service
    fetch_min = float(config.fetch.interval_minutes)
    jitter = min(svc.jitter_seconds, int(fetch_min * 60 / 4))  # never more than a quarter
    specs = [
        JobSpec(
            "fetch",
            _interval(fetch_min, jitter),
            f"interval:{fetch_min}m:jitter{jitter}",
            fetch_min * 30,
            True,
        ),
        JobSpec(
            "approvals",
            _interval(svc.approvals_minutes),
            f"interval:{svc.approvals_minutes}m",
            svc.approvals_minutes * 30,
            True,
        ),
        JobSpec(
            "send",
            _interval(svc.dispatch_minutes),
            f"interval:{svc.dispatch_minutes}m",
            svc.dispatch_minutes * 30,
            True,
        ),
        JobSpec(
            "alerts",
            _interval(svc.alerts_minutes),
            f"interval:{svc.alerts_minutes}m",
            svc.alerts_minutes * 30,
            True,
        ),
    ]
    if config.mail.imap is not None:
        specs.append(
            JobSpec(
                "imap",
                _interval(svc.imap_poll_minutes),
                f"interval:{svc.imap_poll_minutes}m",
                svc.imap_poll_minutes * 30,
                True,
            )
        )
    for ex in config.exchanges:
        tz = config.exchange_tz(ex)
        at = ex.schedule.at
        days = ",".join(str(d) for d in ex.schedule.days)
        specs.append(
            JobSpec(
                f"digest:{ex.id}",
                CronTrigger(day=days, hour=at.hour, minute=at.minute, timezone=tz),
                f"cron:{days}:{ex.schedule.time}:{tz}",
                3600.0,
                # Not at the first start: the first fetch is still running then, and a period
                # is built once (see _step_digest). A slot missed while down runs on start.
                False,
            )
        )
    return specs


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


def _make_scheduler(base: type) -> type:
    from apscheduler.schedulers.base import STATE_RUNNING

    class Scheduler(base):  # type: ignore[misc, valid-type]
        """APScheduler's BackgroundScheduler, minus one surprise: ``shutdown()`` wakes the
        scheduler thread for a last pass *after* setting the state to stopped, and that pass
        (which only skips a *paused* scheduler) advances the next run time of every due job
        without running it — a slot silently lost at every stop. Only a running scheduler
        processes jobs here, so a slot due at stop time is still due at the next start."""

        def _process_jobs(self) -> Any:
            if self.state != STATE_RUNNING:
                return None
            return super()._process_jobs()

    return Scheduler


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
    ) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        self.config = config
        self.db = db
        self.runner = Runner(config, db, owner=owner, lock_ttl=lock_ttl)
        self._stopping = threading.Event()
        #: The latest attempts of scheduled runs (including skipped ones), newest last.
        self.history: collections.deque[RunOutcome] = collections.deque(maxlen=200)
        self.scheduler = _make_scheduler(BackgroundScheduler)(
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
            except (OperationalError, IntegrityError):
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
                "newsexchange.service:run_scheduled",
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
        outcome = self.runner.run(job_id, min_gap=min_gap)
        self.history.append(outcome)
        # Translate after each fetch (even a partly failed one: what came in is worth
        # translating); approval requests right after a digest is built.
        if job_id == "fetch" and outcome.status in ("ok", "failed"):
            if not self._stopping.is_set():
                self.runner.run("translate")
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


def prepare_demo(config: Config, db: Database, *, now: datetime) -> dict[str, Any]:
    """``service.demo``: make the bundled samples usable offline (idempotent).

    - every list with a ``file:`` is imported from it (the sample CSVs under lists/; an
      import merges, so a restart changes nothing), so the approved demo digest has
      recipients;
    - the bundled translation memory ``samples/translation-memory.yaml`` (beside
      feeds.yaml) is imported, so the sample items translate without any provider.
    """
    out: dict[str, Any] = {"lists_imported": [], "memory_entries": 0}
    try:
        lists_mod = importlib.import_module("newsexchange.delivery.lists")
    except ImportError:
        lists_mod = None
    if lists_mod is not None:
        for list_id, lst in config.lists.items():
            if not lst.file:
                continue
            path = config.resolve(lst.file)
            if not path.exists():
                continue
            with db.session() as s:
                parsed = lists_mod.parse_csv(
                    path.read_text(encoding="utf-8"), list_id=list_id, known_lists=config.lists
                )
                lists_mod.import_rows(s, parsed, list_id=list_id, now=now)
            out["lists_imported"].append(list_id)
    tm_file = config.resolve("samples/translation-memory.yaml")
    if tm_file.exists():
        try:
            import_memory = _resolve("newsexchange.translate.memory", "import_memory")
        except StepUnavailable:
            import_memory = None
        if import_memory is not None:
            with db.session() as s:
                out["memory_entries"] = import_memory(s, tm_file, now=now)
    return out


def stored_jobs(db: Database) -> list[dict[str, Any]]:
    """The job store's jobs (id, next run) read straight from its table; [] before the first
    start created it. For /readyz, which runs without a scheduler object."""
    from sqlalchemy import Float, MetaData, Table, inspect
    from sqlalchemy import String as _S

    if not inspect(db.engine).has_table(JOBSTORE_TABLE):
        return []
    from sqlalchemy import Column

    t = Table(
        JOBSTORE_TABLE,
        MetaData(),
        Column("id", _S(191), primary_key=True),
        Column("next_run_time", Float(25)),
    )
    with db.engine.connect() as conn:
        rows = conn.execute(select(t.c.id, t.c.next_run_time)).all()
    return [
        {
            "id": r.id,
            "next_run_at": None
            if r.next_run_time is None
            else datetime.fromtimestamp(r.next_run_time, UTC),
        }
        for r in rows
    ]


# -- logs ----------------------------------------------------------------------------------


class SecretRedactor(logging.Filter):
    """Replaces every secret value of the configuration in a log record with ``***``.

    The steps never log secrets on purpose; this is the belt to that braces: an exception
    message that quotes a URL with a key, a database URL with a password, an SMTP error that
    echoes a login — none of them reaches the log with the secret in it.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)  # uvicorn's terminal colours
        if not self.secrets:
            return True
        record.msg = self._scrub(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key in ("msg", "args") or key.startswith("_"):
                continue
            if isinstance(value, str) and key not in ("name", "levelname", "pathname"):
                setattr(record, key, self._scrub(value))
            elif isinstance(value, dict | list):
                scrubbed = self._scrub(repr(value))
                if scrubbed != repr(value):
                    setattr(record, key, scrubbed)
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            record.exc_text = self._scrub("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


def config_secrets(config: Config) -> list[str]:
    """Every secret value the configuration can hand out: the values of the environment
    variables its ``*_env`` keys name, the signing key, a database password."""
    from urllib.parse import urlsplit

    names: set[str] = {"NEWSEXCHANGE_SECRET_KEY"}

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(k, str) and k.endswith("_env") and isinstance(v, str):
                    names.add(v)
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(config.model_dump())
    values = [v for n in names if (v := config.secret(n))]
    with contextlib.suppress(Exception):
        values.append(config.secret_key.get_secret_value())
    from newsexchange.config import database_url

    with contextlib.suppress(ValueError):
        password = urlsplit(database_url(config)).password
        if password:
            values.append(password)
    return values


def install_secret_redaction(config: Config) -> SecretRedactor:
    """Attach a :class:`SecretRedactor` to the handlers of the ``newsexchange`` logger."""
    redactor = SecretRedactor(config_secrets(config))
    for handler in logging.getLogger("newsexchange").handlers:
        handler.addFilter(redactor)
    return redactor
