"""The work queue on PostgreSQL: the steps as jobs of procrastinate's queue, in the project's
own database.

**APScheduler decides *when*, the queue decides *who*.** Every ``serve``/``worker`` process
keeps its APScheduler (the schedule, stored in ``apscheduler_jobs``); on PostgreSQL a fire does
not run the step, it *defers* a job (:meth:`Deferrer.step`), and whichever worker of whichever
host is free takes it (:mod:`.worker`). On SQLite nothing here is used: the same steps run in
process (:class:`~newsexchange.service.scheduler.Service` + :class:`~.runner.Runner`).

The jobs (task names below):

- :data:`TASK_STEP` ``(job_id, min_gap)`` — one service job (``fetch``, ``translate``,
  ``approvals``, ``imap``, ``alerts``, ``demo``, ``digest:EX`` — one job per exchange, and
  ``send``, whose step on the queue *plans* the send: it cuts it into shards and defers one
  :data:`TASK_SHARD` job each). It runs :meth:`Runner.run` as before — lease, "already ran
  for this slot", a ``job_runs`` row — so that check stays the authority when two processes'
  schedulers fire the same slot.
- :data:`TASK_SHARD` ``(digest_id, first, last)`` — ``run_send`` over one shard's id range.

Each job has ``lock=`` its unit (``job:<id>`` or the shard's key: the same unit never runs
twice at once) and ``queueing_lock=`` the same key (a unit already waiting is not queued
again: :class:`procrastinate.exceptions.AlreadyEnqueued` is caught and reported as False).

- :data:`TASK_FETCH` ``(source_ids, planned_at)`` — ``run_fetch(source_ids=…, only_due=True)``
  over one batch of due sources: the ``fetch`` step on the queue *plans* (``ingest.
  due_source_ids``, cut into batches of ``service.fetch_batch``). The batch fetches only what
  is still due since ``planned_at`` and claims each source first, so a source is fetched once
  however many jobs hold it. Each batch is recorded in ``job_runs`` as a ``fetch`` run with
  its report (``/metrics`` and ``/readyz`` read them), then queues ``translate``.
- :data:`TASK_TRANSLATE` ``(first, last)`` — ``run_translate(id_range=…)`` over one range of
  item ids: the ``translate`` step on the queue plans (``translate.pending_ranges``, 500
  items a range). Provider usage is added in SQL, so ranges translated at once lose no count.

procrastinate is imported inside functions only: a SQLite install runs without it
(tests/structure.py lists it).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from newsexchange.config import Config, database_url
from newsexchange.db import Database, Digest
from newsexchange.digest.states import DigestState

if TYPE_CHECKING:
    from procrastinate import App

    from newsexchange.delivery.shards import Shard

__all__ = [
    "TASK_FETCH",
    "TASK_SHARD",
    "TASK_STEP",
    "TASK_TRANSLATE",
    "Deferrer",
    "conninfo",
    "deferrer_for",
    "is_queue_url",
    "kick",
    "queue_counts",
    "start_sending_if_approved",
    "uses_queue",
]

log = logging.getLogger("newsexchange.service")

TASK_STEP = "newsexchange.step"
TASK_SHARD = "newsexchange.send_shard"
TASK_FETCH = "newsexchange.fetch_batch"
TASK_TRANSLATE = "newsexchange.translate_range"


def is_queue_url(url: str) -> bool:
    """Whether a database URL is PostgreSQL (the queue's home)."""
    return url.startswith(("postgresql", "postgres://"))


def uses_queue(config: Config) -> bool:
    """Whether the steps of this configuration run on the work queue (PostgreSQL)."""
    return is_queue_url(database_url(config))


def conninfo(url: str) -> str:
    """The libpq URL of a SQLAlchemy one: ``postgresql+psycopg://…`` → ``postgresql://…``."""
    return re.sub(r"^postgres(ql)?(\+[A-Za-z0-9_]+)?://", "postgresql://", url)


def step_key(job_id: str) -> str:
    """A step job's lock and queueing lock (the same name as its lease in ``locks``)."""
    return f"job:{job_id}"


class Deferrer:
    """Puts jobs on the queue, from any thread (a synchronous psycopg pool of its own).

    The worker's procrastinate App runs on its own event loop; deferring through it from
    APScheduler's threads or a web request would need that loop. This one is plain sync.
    """

    def __init__(self, config: Config) -> None:
        from procrastinate import App, SyncPsycopgConnector

        self.config = config
        self.app: App = App(
            connector=SyncPsycopgConnector(
                conninfo=conninfo(database_url(config)), min_size=0, max_size=3
            )
        )
        self.app.open()

    def step(
        self,
        job_id: str,
        *,
        min_gap: float = 0.0,
        delay: float | None = None,
        attempt: int = 0,
    ) -> bool:
        """Queue service job ``job_id``; False when it is already waiting. ``attempt`` counts
        the times it was put back because its lease was held elsewhere."""
        kwargs: dict[str, Any] = {"job_id": job_id, "min_gap": min_gap}
        if attempt:
            kwargs["attempt"] = attempt
        return self._defer(TASK_STEP, step_key(job_id), kwargs, delay)

    def shard(self, shard: Shard) -> bool:
        """Queue one shard of a send; False when it is already waiting."""
        return self.shard_range(shard.digest_id, shard.first, shard.last)

    def shard_range(self, digest_id: int, first: int, last: int) -> bool:
        """Queue the shard ``first``..``last`` of digest ``digest_id`` (see :meth:`shard`)."""
        return self._defer(
            TASK_SHARD,
            f"send:{digest_id}:{first}",  # Shard.key
            {"digest_id": digest_id, "first": first, "last": last},
            None,
        )

    def fetch_batch(self, source_ids: list[str], *, planned_at: str) -> bool:
        """Queue the fetch of one batch of due sources; False when that batch already waits."""
        digest = hashlib.sha1(",".join(source_ids).encode(), usedforsecurity=False)
        return self._defer(
            TASK_FETCH,
            f"fetch:{digest.hexdigest()[:16]}",
            {"source_ids": source_ids, "planned_at": planned_at},
            None,
        )

    def translate_range(self, first: int, last: int) -> bool:
        """Queue the translation of items ``first``..``last``; False when it already waits."""
        return self._defer(
            TASK_TRANSLATE, f"translate:{first}:{last}", {"first": first, "last": last}, None
        )

    def _defer(self, task: str, key: str, kwargs: dict[str, Any], delay: float | None) -> bool:
        from procrastinate.exceptions import AlreadyEnqueued

        try:
            self.app.configure_task(
                task,
                lock=key,
                queueing_lock=key,
                schedule_at=self._database_now() + timedelta(seconds=delay) if delay else None,
            ).defer(**kwargs)
        except AlreadyEnqueued:
            return False
        return True

    def _database_now(self) -> datetime:
        """The database's clock: a delay is counted from it, not from this host's clock
        (procrastinate's ``schedule_in`` would, and a host whose clock is off would put the
        job off by as much — or run it early)."""
        row = self.app.connector.get_sync_connector().execute_query_one(
            "SELECT clock_timestamp() AS now"
        )
        now: datetime = row["now"]
        return now

    def counts(self) -> dict[str, dict[str, int]]:
        """Jobs per task and status (todo, doing, failed …) as the queue holds them."""
        return {
            row["name"]: {k: int(v) for k, v in row.items() if k != "name"}
            for row in self.app.job_manager.list_tasks()
        }

    def close(self) -> None:
        self.app.close()


# One deferrer per database for callers outside a worker (the web app's approval route): a
# pool opened once, not per request.
_deferrers: dict[str, Deferrer] = {}
_deferrers_lock = threading.Lock()


def deferrer_for(config: Config) -> Deferrer:
    """This process's shared :class:`Deferrer` for the configuration's database."""
    url = database_url(config)
    with _deferrers_lock:
        d = _deferrers.get(url)
        if d is None:
            d = _deferrers[url] = Deferrer(config)
        return d


def kick(config: Config, db: Database, job_id: str) -> bool:
    """Start service job ``job_id`` now, after a commit (e.g. ``"send"`` after an approval).

    On PostgreSQL the job is deferred (no ``min_gap``: this is not a scheduled slot) and
    True returned — also when it was already waiting, since it will run. On SQLite there is no
    queue: False, and the in-process schedule runs it at its next fire. ``db`` is taken so a
    later version can defer in the caller's transaction (procrastinate's ``connection=``).
    """
    if not uses_queue(config):
        return False
    deferrer_for(config).step(job_id)
    log.info("job queued now", extra={"job": job_id})
    return True


def start_sending_if_approved(config: Config, db: Database, digest_id: int) -> bool:
    """After an approval's commit: on PostgreSQL, queue the send plan now, so sending starts
    within seconds of the editor's click instead of at the next dispatch tick (a failure to
    queue is logged, never the editor's problem: the tick plans it anyway). The deliveries
    are queued by that plan, in a worker — never in the editor's request."""
    if not uses_queue(config):
        return False
    try:
        with db.session() as s:
            digest = s.get(Digest, digest_id)
            if digest is None or digest.state != DigestState.APPROVED:
                return False
        return kick(config, db, "send")
    except Exception:
        log.warning("could not queue the send after an approval", exc_info=True)
        return False


def queue_counts(config: Config) -> dict[str, dict[str, int]] | None:
    """Jobs per task and status on PostgreSQL (``newsexchange jobs``); None on SQLite."""
    if not uses_queue(config):
        return None
    return deferrer_for(config).counts()
