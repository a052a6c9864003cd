"""Fetch on the work queue spreads (issue 13): the ``fetch`` step plans one job per batch of
due sources, two workers take the batches, every source is fetched exactly once, each batch
is recorded as a ``fetch`` run (``/metrics``, ``/readyz``), and the translation follows.

Real components: PostgreSQL (required under ``CI=true``), feeds on a loopback HTTP server,
two :class:`QueueWorker` s (each its own engine and procrastinate worker) in threads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import date

from sqlalchemy import func, select, text

from newsexchange.config import Config
from newsexchange.db import Database, Delivery, Item, JobRun
from newsexchange.service.queue import start_sending_if_approved
from newsexchange.service.worker import QueueWorker
from tests.conftest import BASE_CONFIG
from tests.servers import HTTPServer, Response
from tests.test_delivery_support import seed_digest
from tests.test_ingest import fetch_yaml, fi_items, rss
from tests.test_queue import _run_worker_thread, _wait_queue_idle, queue_config

SOURCES = [f"src{i:02d}" for i in range(25)]


def test_fetch_batches_spread_over_two_workers_and_each_source_is_fetched_once(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    pg_server_url: Callable[[], str],
    http_server: HTTPServer,
) -> None:
    for sid in SOURCES:
        http_server.route(f"/{sid}", Response(200, rss(fi_items(2, prefix=sid)), delay=0.05))
    sources = "sources:\n" + "".join(
        f'  - {{id: {sid}, region: joensuu, language: fi, url: "{http_server.url}/{sid}"}}\n'
        for sid in SOURCES
    )
    base = BASE_CONFIG.replace("sqlite:///var/test.db", pg_server_url())
    cfg = write_config(fetch_yaml(http_server) + sources + "service: {fetch_batch: 4}\n", base=base)
    workers = [QueueWorker(cfg, db_for(cfg), concurrency=2) for _ in range(2)]
    threads = [_run_worker_thread(w) for w in workers]
    try:
        assert workers[0].deferrer.step("fetch")
        db = workers[0].db
        deadline = time.monotonic() + 120
        while sum(w.done["fetch:done"] for w in workers) < 7:  # 25 sources, 4 a batch
            assert time.monotonic() < deadline, [dict(w.done) for w in workers]
            time.sleep(0.1)
        _wait_queue_idle(workers[0].deferrer)
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(timeout=60)
        for w in workers:
            w.close()

    assert sorted(r.path for r in http_server.requests) == sorted(f"/{s}" for s in SOURCES)
    assert all(w.done["fetch:done"] >= 1 for w in workers), [dict(w.done) for w in workers]
    with db.session() as s:
        runs = list(s.scalars(select(JobRun).where(JobRun.job == "fetch")))
        stored = s.scalar(select(func.count()).select_from(Item))
        translate_runs = s.scalar(
            select(func.count()).select_from(JobRun).where(JobRun.job == "translate")
        )
    plan = [r for r in runs if (r.summary or {}).get("batches") is not None]
    batches = [r for r in runs if r not in plan]
    assert [p.summary["due"] for p in plan] == [25]  # type: ignore[index]
    assert len(batches) == 7 and all(r.ok for r in batches)
    assert sum(r.summary["new_items"] for r in batches) == 50 == stored  # type: ignore[index]
    assert translate_runs and translate_runs >= 1


def test_an_approval_queues_the_send_plan_at_once_on_postgresql(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    pg_server_url: Callable[[], str],
) -> None:
    """After the approving commit, the send is queued (it starts within seconds, not at the
    next dispatch tick); a digest that is not approved queues nothing."""
    cfg = queue_config(write_config, pg_server_url())
    db = db_for(cfg)
    people = [("Анна", "anna@example.org"), ("Олег", "oleg@example.org")]
    approved = seed_digest(db, cfg, people, enqueue=False)
    waiting = seed_digest(db, cfg, [("Юля", "julia@example.org")], enqueue=False,
                          state="awaiting_approval", period_start=date(2026, 11, 16))  # fmt: skip
    assert not start_sending_if_approved(cfg, db, waiting)
    assert start_sending_if_approved(cfg, db, approved)
    with db.session() as s:
        jobs = s.execute(
            text("SELECT task_name, args->>'job_id', status FROM procrastinate_jobs")
        ).all()
    assert [tuple(j) for j in jobs] == [("newsexchange.step", "send", "todo")]
    with db.session() as s:  # and nothing was written for the recipients yet: the plan does
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0


def test_finished_jobs_are_pruned_a_day_after_they_end_failed_ones_after_thirty_days(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    pg_server_url: Callable[[], str],
) -> None:
    cfg = queue_config(write_config, pg_server_url())
    worker = QueueWorker(cfg, db_for(cfg), concurrency=2)
    for job in ("approvals", "alerts"):
        assert worker.deferrer.step(job)
    thread = _run_worker_thread(worker)
    try:
        _wait_queue_idle(worker.deferrer)
    finally:
        worker.stop()
        thread.join(timeout=60)
    db = worker.db

    def jobs() -> list[tuple[str, str]]:
        with db.session() as s:
            rows = s.execute(
                text("SELECT args->>'job_id', status::text FROM procrastinate_jobs ORDER BY id")
            ).all()
        return [(j, st) for j, st in rows]

    def age(days: int) -> None:
        with db.session() as s:
            s.execute(text(f"UPDATE procrastinate_events SET at = at - interval '{days} days'"))

    def prune() -> None:
        async def run() -> None:
            async with worker.app.open_async():
                await worker.prune()

        asyncio.run(run())

    assert jobs() == [("approvals", "succeeded"), ("alerts", "succeeded")]
    with db.session() as s:  # one of them had failed
        s.execute(
            text("UPDATE procrastinate_jobs SET status = 'failed' WHERE args->>'job_id' = 'alerts'")
        )
    prune()
    assert len(jobs()) == 2, "nothing is pruned the day it finished"
    age(2)
    prune()
    assert jobs() == [("alerts", "failed")], "succeeded: gone after a day; failed: kept"
    age(30)
    prune()
    assert jobs() == []
    worker.close()
