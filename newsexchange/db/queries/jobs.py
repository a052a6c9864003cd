"""The service's own tables: ``job_runs`` (one row per run of a job) and APScheduler's job
store (``apscheduler_jobs``), and what ``/readyz``, ``/metrics`` and ``newsexchange jobs``
read from the database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    MetaData,
    String,
    Table,
    delete,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import InstrumentedAttribute, Session

from newsexchange.db.engine import Database
from newsexchange.db.tables import (
    Delivery,
    Digest,
    Item,
    JobRun,
    ProviderUsage,
    Source,
    Translation,
)

__all__ = [
    "JOBSTORE_CREATE_RACE",
    "JOBSTORE_TABLE",
    "FinishedRun",
    "JobHistory",
    "close_run",
    "count_by",
    "fetch_summaries",
    "finished_runs",
    "job_history",
    "last_success",
    "ping",
    "provider_totals",
    "prune_runs",
    "ran_since",
    "sources_failing",
    "start_run",
    "stored_jobs",
]

#: APScheduler's job store table, in the project's own database.
JOBSTORE_TABLE = "apscheduler_jobs"

#: What APScheduler's first start may raise when two processes create its table at once
#: (the loser of the CREATE race; trying again a moment later succeeds).
JOBSTORE_CREATE_RACE: tuple[type[Exception], ...] = (OperationalError, IntegrityError)


# -- job_runs ------------------------------------------------------------------------------


def start_run(db: Database, job: str, *, now: datetime) -> int:
    """Record that ``job`` starts now; returns the run's id."""
    with db.session() as s:
        run = JobRun(job=job, started_at=now)
        s.add(run)
        s.flush()
        return run.id


def close_run(
    db: Database,
    run_id: int,
    *,
    finished_at: datetime,
    ok: bool,
    error: str | None,
    summary: dict[str, Any] | None = None,
) -> None:
    """Record how run ``run_id`` ended (``summary`` left as it is when None)."""
    values: dict[str, Any] = {"finished_at": finished_at, "ok": ok, "error": error}
    if summary is not None:
        values["summary"] = summary
    with db.session() as s:
        s.execute(update(JobRun).where(JobRun.id == run_id).values(**values))


def ran_since(db: Database, job: str, since: datetime) -> bool:
    """Whether ``job`` started after ``since`` (in any process)."""
    with db.session() as s:
        n = s.scalar(
            select(func.count())
            .select_from(JobRun)
            .where(JobRun.job == job, JobRun.started_at > since)
        )
    return bool(n)


def prune_runs(db: Database, *, before: datetime) -> None:
    """Forget the runs started before ``before``."""
    with db.session() as s:
        s.execute(delete(JobRun).where(JobRun.started_at < before))


def last_success(db: Database, job: str) -> datetime | None:
    """When ``job`` last started a run that succeeded."""
    with db.session() as s:
        return s.scalar(
            select(func.max(JobRun.started_at)).where(JobRun.job == job, JobRun.ok.is_(True))
        )


@dataclass(frozen=True)
class JobHistory:
    """A job's latest run and its record, for ``newsexchange jobs``."""

    last_run: datetime | None
    last_ok: bool | None
    last_error: str | None
    last_success: datetime | None
    failures: int


def job_history(db: Database, jobs: Sequence[str]) -> dict[str, JobHistory]:
    """Each of ``jobs``' latest run, latest success and failed runs (one session)."""
    out: dict[str, JobHistory] = {}
    with db.session() as s:
        for job in jobs:
            last = s.scalars(
                select(JobRun).where(JobRun.job == job).order_by(JobRun.started_at.desc()).limit(1)
            ).first()
            last_ok = s.scalar(
                select(func.max(JobRun.started_at)).where(JobRun.job == job, JobRun.ok.is_(True))
            )
            failures = s.scalar(
                select(func.count())
                .select_from(JobRun)
                .where(JobRun.job == job, JobRun.ok.is_(False))
            )
            out[job] = JobHistory(
                last_run=last.started_at if last else None,
                last_ok=last.ok if last else None,
                last_error=last.error if last and not last.ok else None,
                last_success=last_ok,
                failures=failures or 0,
            )
    return out


# -- the job store -------------------------------------------------------------------------


def stored_jobs(db: Database) -> list[dict[str, Any]]:
    """The job store's jobs (id, next run) read straight from its table; [] before the first
    start created it. For /readyz, which runs without a scheduler object."""
    if not inspect(db.engine).has_table(JOBSTORE_TABLE):
        return []
    t = Table(
        JOBSTORE_TABLE,
        MetaData(),
        Column("id", String(191), primary_key=True),
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


# -- what /readyz and /metrics read --------------------------------------------------------


def ping(db: Database) -> None:
    """Ask the database the simplest question; raises whatever talking to it raises."""
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


#: The groupings /metrics counts rows by (metric name → columns).
COUNTED: dict[str, tuple[InstrumentedAttribute[Any], ...]] = {
    "items": (Item.source_id, Item.region),
    "translations": (Translation.language, Translation.status),
    "digests": (Digest.exchange_id, Digest.state),
    "deliveries": (Delivery.status,),
}


def count_by(s: Session, what: str) -> list[tuple[Any, ...]]:
    """Rows of one :data:`COUNTED` table grouped by its columns: ``(*values, count)``."""
    columns = COUNTED[what]
    return [tuple(r) for r in s.execute(select(*columns, func.count()).group_by(*columns))]


def sources_failing(s: Session) -> int:
    """How many sources are failing now."""
    return (
        s.scalar(select(func.count()).select_from(Source).where(Source.failing_since.is_not(None)))
        or 0
    )


def provider_totals(s: Session) -> list[tuple[str, int, int, int]]:
    """Per translation provider: characters, requests and failures, all days added up."""
    rows = s.execute(
        select(
            ProviderUsage.provider,
            func.sum(ProviderUsage.characters),
            func.sum(ProviderUsage.requests),
            func.sum(ProviderUsage.failures),
        ).group_by(ProviderUsage.provider)
    )
    return [(p, c or 0, r or 0, f or 0) for p, c, r, f in rows]


@dataclass(frozen=True)
class FinishedRun:
    job: str
    started_at: datetime
    finished_at: datetime
    ok: bool


def finished_runs(s: Session) -> Iterator[FinishedRun]:
    """Every finished run still kept."""
    rows = s.execute(
        select(JobRun.job, JobRun.started_at, JobRun.finished_at, JobRun.ok).where(
            JobRun.finished_at.is_not(None)
        )
    )
    for job, started, finished, ok in rows:
        if finished is not None:
            yield FinishedRun(job, started, finished, bool(ok))


def fetch_summaries(s: Session) -> Iterator[Any]:
    """The reports of the successful fetch runs still kept (their JSON summaries)."""
    yield from s.scalars(select(JobRun.summary).where(JobRun.job == "fetch", JobRun.ok.is_(True)))
