"""The service's jobs in one table: each step, the function that runs it, and its schedule.

:data:`STEPS` is the whole wiring of the service — the step functions are imported from the
steps' public faces, so mypy and a reader see every dependency (nothing is looked up by name
at run time). :func:`job_specs` turns the table's schedules into the jobs feeds.yaml asks for
(pure: no scheduler, no database).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from newsexchange.alerts import check_alerts
from newsexchange.approval import poll_imap, run_approvals
from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.db.queries import jobs as queries
from newsexchange.db.queries import mail_queue
from newsexchange.delivery.send import run_send
from newsexchange.digest import build_due
from newsexchange.errors import StopRequested
from newsexchange.impact.pickups import find_pickups
from newsexchange.ingest import run_fetch
from newsexchange.service.demo import step_demo
from newsexchange.service.reports import StepResult
from newsexchange.translate import run_translate

__all__ = [
    "JOB_RUNS_KEEP_DAYS",
    "RUN_ONCE_ORDER",
    "STEPS",
    "JobSpec",
    "Step",
    "StepFn",
    "bind_stop_flag",
    "job_specs",
]

#: How long job_runs (they feed /metrics and /readyz) and sent system mail are kept.
JOB_RUNS_KEEP_DAYS = 30

#: A step as the service calls it: ``(config, db, now, arg)``; ``arg`` is what follows the
#: colon in the job id (``digest:ru-fi`` → ``"ru-fi"``), else None.
StepFn = Callable[[Config, Database, datetime, str | None], StepResult]


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job as feeds.yaml asks for it.

    ``spec`` fingerprints the schedule: a stored job with the same fingerprint is kept as is
    (with its next run time), a changed one is replaced.
    """

    id: str
    trigger: BaseTrigger
    spec: str
    min_gap: float  # seconds; see Runner.run
    run_at_start: bool  # a brand-new job runs at once instead of after one interval


# -- the steps, as the service calls them --------------------------------------------------

# The stop flag of the Runner whose step runs in this thread (steps take plain arguments;
# only the send step looks at it).
_run_local = threading.local()


def bind_stop_flag(stopping: threading.Event) -> None:
    """Let the step about to run in this thread see ``stopping`` (set when the service stops)."""
    _run_local.stopping = stopping


def _step_fetch(config: Config, db: Database, now: datetime, arg: str | None) -> StepResult:
    return run_fetch(db, config, now=now)


def _step_translate(config: Config, db: Database, now: datetime, arg: str | None) -> StepResult:
    return run_translate(db, config, now=now)


def _step_impact(config: Config, db: Database, now: datetime, arg: str | None) -> StepResult:
    """Look for the receiving side's retellings of the sent digests' stories among what the
    fetch brought in (issue 14): suggestions for the editors, never decisions."""
    return find_pickups(db, config, now=now)


def _step_digest(config: Config, db: Database, now: datetime, arg: str | None) -> StepResult:
    """Build the due digest of one exchange (``arg``), or of every exchange."""
    return build_due(config, db, now=now, exchange_id=arg).to_json()


def _step_approvals(config: Config, db: Database, now: datetime, arg: str | None) -> StepResult:
    return run_approvals(db, config, now=now)


def _step_imap(config: Config, db: Database, now: datetime, arg: str | None) -> StepResult:
    if config.mail.imap is None:
        return {"skipped": "mail.imap is not configured"}
    return poll_imap(db, config, now=now)


def _step_send(config: Config, db: Database, now: datetime, arg: str | None) -> StepResult:
    """Dispatch approved digests. On a stop (SIGTERM) the send ends after the chunk in hand:
    every message already handed to the server is marked sent (each chunk commits on its
    own), and the deliveries claimed but not sent stay claimed by this process, which the
    next start takes over at once (their claimer is dead) — nothing half-written, nobody
    mailed twice."""
    stopping: threading.Event | None = getattr(_run_local, "stopping", None)

    def progress(done: int, total: int) -> None:
        if stopping is not None and stopping.is_set() and done < total:
            raise StopRequested(f"stopped after {done} of {total} deliveries")

    return run_send(db, config, now=now, progress=progress)


def _step_alerts(config: Config, db: Database, now: datetime, arg: str | None) -> StepResult:
    report = check_alerts(db, config, now=now)
    keep_from = now - timedelta(days=JOB_RUNS_KEEP_DAYS)
    queries.prune_runs(db, before=keep_from)
    with db.session() as s:  # the approval mail already sent: a month is plenty to look back
        mail_queue.prune_sent(s, before=keep_from)
    return report


# -- the schedules -------------------------------------------------------------------------

Schedule = Callable[[Config], list[JobSpec]]


def _interval(minutes: float, jitter: int | None = None) -> IntervalTrigger:
    return IntervalTrigger(seconds=minutes * 60, jitter=jitter or None, timezone=UTC)


def _after_fetch(config: Config) -> list[JobSpec]:
    """No job of its own: :meth:`Service.run_job` runs it after each fetch."""
    return []


def _fetch_schedule(config: Config) -> list[JobSpec]:
    fetch_min = float(config.fetch.interval_minutes)
    jitter = min(config.service.jitter_seconds, int(fetch_min * 60 / 4))  # at most a quarter
    return [
        JobSpec(
            "fetch",
            _interval(fetch_min, jitter),
            f"interval:{fetch_min}m:jitter{jitter}",
            fetch_min * 30,
            True,
        )
    ]


def _every(job: str, minutes_of: Callable[[Config], float]) -> Schedule:
    """A job every ``minutes_of(config)`` minutes, run at once when it is new."""

    def schedule(config: Config) -> list[JobSpec]:
        minutes = minutes_of(config)
        return [JobSpec(job, _interval(minutes), f"interval:{minutes}m", minutes * 30, True)]

    return schedule


def _imap_schedule(config: Config) -> list[JobSpec]:
    if config.mail.imap is None:
        return []
    return _every("imap", lambda c: c.service.imap_poll_minutes)(config)


def _digest_schedule(config: Config) -> list[JobSpec]:
    """One job per exchange, on its schedule's days and time in its time zone."""
    specs = []
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
                # is built once (see digest.build_due). A slot missed while down runs on start.
                False,
            )
        )
    return specs


# -- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One row of :data:`STEPS`."""

    name: str
    run: StepFn
    schedule: Schedule = _after_fetch


#: Every step the service runs, in the order ``newsexchange jobs`` lists their jobs.
STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step("fetch", _step_fetch, _fetch_schedule),
        Step("translate", _step_translate),  # after each fetch
        Step("impact", _step_impact),  # after each fetch, after the translation
        Step("demo", step_demo),  # after each fetch, with service.demo
        Step(
            "approvals", _step_approvals, _every("approvals", lambda c: c.service.approvals_minutes)
        ),
        Step("send", _step_send, _every("send", lambda c: c.service.dispatch_minutes)),
        Step("alerts", _step_alerts, _every("alerts", lambda c: c.service.alerts_minutes)),
        Step("imap", _step_imap, _imap_schedule),
        Step("digest", _step_digest, _digest_schedule),
    )
}

#: ``newsexchange run-once`` order: the data flows one way (ARCHITECTURE.md).
RUN_ONCE_ORDER = (
    "fetch",
    "translate",
    "impact",
    "digest",
    "demo",
    "approvals",
    "imap",
    "send",
    "alerts",
)


def job_specs(config: Config) -> list[JobSpec]:
    """The jobs feeds.yaml asks for (pure: no scheduler, no database)."""
    return [spec for step in STEPS.values() for spec in step.schedule(config)]
