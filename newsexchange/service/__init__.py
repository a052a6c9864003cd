"""The background service: APScheduler jobs wired to the steps, one lease per job, every run
recorded.

The scheduler only decides *when* a step runs; the steps are the same functions the CLI
calls (``run_fetch``, ``run_translate``, ``build_digest``, ``run_approvals``, ``poll_imap``,
``run_send``, :func:`newsexchange.alerts.check_alerts`). Read, in this order:

- :mod:`.jobs` — **the table** :data:`~.jobs.STEPS`: each step, the function that runs it
  and its schedule (plain imports from the steps' public faces), and :func:`~.jobs.job_specs`.
- :mod:`.runner` — one run of one job: its lease (:func:`newsexchange.common.leases.lease`),
  "already ran for this slot", its ``job_runs`` row.
- :mod:`.scheduler` — the APScheduler :class:`~.scheduler.Service`.
- :mod:`.periods`, :mod:`.demo` — the digest and demo jobs.
- :mod:`.queue`, :mod:`.worker` — on PostgreSQL: the work queue (procrastinate) the
  scheduler's fires are deferred to, and the worker every ``serve``/``worker`` process runs.

What the service adds to the steps:

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
- **A clean stop.** :meth:`Service.begin_shutdown` pauses the scheduler (no new runs);
  :meth:`Service.stop` waits for the running steps to finish. A send in progress finishes its
  current batch; rows it had not claimed stay pending for the next start.
"""

from newsexchange.common.leases import acquire_lock, lease, release_lock, renew_lock
from newsexchange.common.leases import owner_id as make_owner
from newsexchange.db.queries.jobs import JOBSTORE_TABLE, stored_jobs
from newsexchange.errors import StopRequested
from newsexchange.logs import SecretRedactor, config_secrets, install_secret_redaction
from newsexchange.service.demo import prepare_demo
from newsexchange.service.jobs import (
    JOB_RUNS_KEEP_DAYS,
    RUN_ONCE_ORDER,
    STEPS,
    JobSpec,
    Step,
    job_specs,
)
from newsexchange.service.queue import Deferrer, kick, queue_counts, uses_queue
from newsexchange.service.reports import Report, report_json
from newsexchange.service.runner import JobBusy, Runner, RunOutcome
from newsexchange.service.scheduler import Service, run_scheduled
from newsexchange.service.worker import QueueWorker

__all__ = [
    "JOBSTORE_TABLE",
    "JOB_RUNS_KEEP_DAYS",
    "RUN_ONCE_ORDER",
    "STEPS",
    "Deferrer",
    "JobBusy",
    "JobSpec",
    "QueueWorker",
    "Report",
    "RunOutcome",
    "Runner",
    "SecretRedactor",
    "Service",
    "Step",
    "StopRequested",
    "acquire_lock",
    "config_secrets",
    "install_secret_redaction",
    "job_specs",
    "kick",
    "lease",
    "make_owner",
    "prepare_demo",
    "queue_counts",
    "release_lock",
    "renew_lock",
    "report_json",
    "run_scheduled",
    "stored_jobs",
    "uses_queue",
]
