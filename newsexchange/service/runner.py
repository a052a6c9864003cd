"""Running one job: under its lease, at most once per slot, recorded in ``job_runs``.

Shared by the service and ``newsexchange run-once`` (so a cron-driven run-once and a service
never overlap).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from newsexchange.common.leases import lease, owner_id
from newsexchange.config import Config
from newsexchange.db import Database, utcnow
from newsexchange.db.queries import jobs as queries
from newsexchange.errors import NewsExchangeError, StopRequested
from newsexchange.service.jobs import STEPS, StepFn, bind_stop_flag
from newsexchange.service.reports import report_json

__all__ = ["JobBusy", "RunOutcome", "Runner"]

log = logging.getLogger("newsexchange.service")


class JobBusy(NewsExchangeError):
    """A job's lease is held by another process (raised only by a Runner made with
    ``raise_when_busy``, i.e. on the work queue).

    In process (SQLite) a held lease means "another process runs this slot": skipping is
    right, the scheduler fires again. On the queue a skip would lose the job for good when the
    holder is a worker that died on another host (its lease lives on for
    ``lock_ttl_seconds``), so the queue task catches this and queues the job again a few
    seconds later (:meth:`newsexchange.service.worker.QueueWorker.run_step`); the ``min_gap``
    check then skips it if the holder did finish the slot.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is running in another process (its lease is held)")
        self.job_id = job_id


@dataclass
class RunOutcome:
    """What became of one attempt to run a job."""

    job: str
    status: str  # ok | failed | skipped | stopped | queued (deferred to the work queue)
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
    """Runs one job at a time under its lease and records it."""

    def __init__(
        self,
        config: Config,
        db: Database,
        *,
        owner: str | None = None,
        lock_ttl: float | None = None,
        steps: Mapping[str, StepFn] | None = None,
        raise_when_busy: bool = False,
    ) -> None:
        """``steps`` replaces some steps' functions (the work queue runs "send" as a planner
        of shard jobs); ``raise_when_busy`` raises :class:`JobBusy` instead of skipping when
        the lease is held elsewhere."""
        self.config = config
        self.steps: dict[str, StepFn] = {name: step.run for name, step in STEPS.items()}
        self.steps.update(steps or {})
        self.raise_when_busy = raise_when_busy
        self.db = db
        self.owner = owner or owner_id()
        self.lock_ttl = lock_ttl if lock_ttl is not None else config.service.lock_ttl_seconds
        #: Set when the service stops: a send in progress ends after its current chunk.
        self.stopping = threading.Event()

    def run(self, job_id: str, *, min_gap: float = 0.0) -> RunOutcome:
        """Run job ``job_id`` (``step`` or ``step:arg``) now, unless another process holds
        its lease or ran it less than ``min_gap`` seconds ago."""
        started = time.monotonic()
        with lease(self.db, f"job:{job_id}", self.owner, ttl=self.lock_ttl) as held:
            if not held:
                if self.raise_when_busy:
                    raise JobBusy(job_id)
                log.info("job skipped: running elsewhere", extra={"job": job_id})
                return RunOutcome(job_id, "skipped", error="running in another process")
            now = utcnow()
            if min_gap > 0 and queries.ran_since(
                db=self.db, job=job_id, since=now - timedelta(seconds=min_gap)
            ):
                log.info("job skipped: this slot already ran", extra={"job": job_id})
                return RunOutcome(job_id, "skipped", error="already ran for this slot")
            run_id = queries.start_run(self.db, job_id, now=now)
            status, summary, error = self._step(job_id, run_id, now)
            seconds = time.monotonic() - started
            queries.close_run(
                self.db,
                run_id,
                finished_at=utcnow(),
                ok=status != "failed",
                error=error,
                summary=summary,
            )
            if status == "ok":
                log.info(
                    "job done",
                    extra={"job": job_id, "seconds": round(seconds, 3), **_brief(summary)},
                )
            return RunOutcome(job_id, status, seconds, summary, error)

    def _step(
        self, job_id: str, run_id: int, now: datetime
    ) -> tuple[str, dict[str, Any], str | None]:
        """Run the step of ``job_id``: its status, report and error."""
        step_name, _, arg = job_id.partition(":")
        bind_stop_flag(self.stopping)
        try:
            return (
                "ok",
                report_json(self.steps[step_name](self.config, self.db, now, arg or None)),
                None,
            )
        except StopRequested as exc:
            log.warning("job stopped for shutdown", extra={"job": job_id, "detail": str(exc)})
            return "stopped", {"stopped": str(exc)}, None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("job failed", extra={"job": job_id, "error": error}, exc_info=True)
            return "failed", {}, error
        except BaseException as exc:  # Ctrl-C in run-once: close the record, then go
            with contextlib.suppress(Exception):
                queries.close_run(
                    self.db, run_id, finished_at=utcnow(), ok=False, error=type(exc).__name__
                )
            raise


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """Counts only, for the log line: a report's lists (failures, recipients …) stay in
    job_runs, never in the log."""
    return {
        k: v
        for k, v in summary.items()
        if isinstance(v, int | float | bool) and not isinstance(v, str) and k not in ("job", "ok")
    }
