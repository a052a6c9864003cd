"""/healthz, /readyz and /metrics over the real app, served by uvicorn on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from newsexchange.config import Config, database_url
from newsexchange.db import (
    Database,
    Delivery,
    Digest,
    Item,
    JobRun,
    ProviderUsage,
    Source,
    utcnow,
)
from newsexchange.service import Service
from newsexchange.web.app import create_app

SOURCE = """\
fetch: {interval_minutes: 30}
sources:
  - {id: yle, region: joensuu, url: "https://yle.example/rss", language: fi}
"""


@contextmanager
def served(
    config: Config,
    db: Database,
    port: int = 0,
    clock: Callable[[], datetime] | None = None,
) -> Iterator[str]:
    """The real app under uvicorn on loopback (a free port unless given), on ``clock`` when
    given (else the real one); yields its URL."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, db, clock=clock), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def app_db(write_config: Callable[..., Config]) -> Iterator[tuple[Config, Database]]:
    cfg = write_config(SOURCE)
    db = Database(database_url(cfg))
    yield cfg, db
    db.dispose()


def test_healthz_answers_ok_with_security_headers(app_db: tuple[Config, Database]) -> None:
    cfg, db = app_db
    with served(cfg, db) as url:
        r = httpx.get(f"{url}/healthz")
    assert r.status_code == 200
    assert r.text == "ok\n"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_readyz_is_ready_after_a_recent_fetch_and_503_with_reasons_when_stale(
    app_db: tuple[Config, Database],
) -> None:
    cfg, db = app_db
    now = utcnow()
    with db.session() as s:
        s.add(JobRun(job="fetch", started_at=now - timedelta(minutes=5), finished_at=now, ok=True))
    with served(cfg, db) as url:
        r = httpx.get(f"{url}/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["ready"] is True
        assert r.json()["checks"]["database"] == "ok"

        with db.session() as s:
            s.query(JobRun).delete()
            s.add(
                JobRun(
                    job="fetch",
                    started_at=now - timedelta(hours=2),
                    finished_at=now - timedelta(hours=2),
                    ok=True,
                )
            )
            # a failed fetch since does not count as a successful one
            s.add(
                JobRun(
                    job="fetch", started_at=now - timedelta(minutes=1), finished_at=now, ok=False
                )
            )
        r = httpx.get(f"{url}/readyz")
    assert r.status_code == 503
    reasons = r.json()["reasons"]
    assert any("last successful fetch was 120 minutes ago" in x for x in reasons), reasons


def test_readyz_reports_overdue_jobs_when_the_scheduler_is_not_running_them(
    app_db: tuple[Config, Database],
) -> None:
    cfg, db = app_db
    svc = Service(cfg, db)
    svc._start_paused()  # the schedule is stored …
    svc.scheduler.modify_job("send", next_run_time=utcnow() - timedelta(hours=1))
    svc.scheduler.shutdown(wait=False)  # … and nobody runs it
    with db.session() as s:
        s.add(JobRun(job="fetch", started_at=utcnow(), finished_at=utcnow(), ok=True))
    with served(cfg, db) as url:
        r = httpx.get(f"{url}/readyz")
        m = _metrics(url)
    assert (
        m[("newsexchange_job_next_run_timestamp_seconds", (("job", "send"),))] < time.time() - 3500
    )
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["jobs"]["overdue"] == ["send"]
    assert any("job send is overdue by 60 minutes" in x for x in body["reasons"])


def test_readyz_is_503_when_the_database_is_unreachable(
    write_config: Callable[..., Config],
) -> None:
    cfg = write_config(SOURCE)
    db = Database(
        "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2", run_migrations=False
    )
    try:
        with served(cfg, db) as url:
            assert httpx.get(f"{url}/healthz").status_code == 200, "liveness does not need the db"
            r = httpx.get(f"{url}/readyz", timeout=15)
        assert r.status_code == 503
        assert r.json()["reasons"][0].startswith("database unreachable")
    finally:
        db.dispose()


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_read_what_the_database_holds(app_db: tuple[Config, Database]) -> None:
    cfg, db = app_db
    now = utcnow()
    with db.session() as s:
        s.add(Source(id="yle", config_url="u", url="u", failing_since=now))
        s.flush()
        for i in range(3):
            s.add(
                Item(
                    source_id="yle",
                    identity=f"i{i}",
                    title=f"t{i}",
                    region="joensuu",
                    language="fi",
                    published_at=now,
                    content_hash=f"h{i}",
                )
            )
        s.add(ProviderUsage(provider="libre", day=date(2026, 11, 1), requests=2, characters=1200))
        s.add(ProviderUsage(provider="libre", day=date(2026, 11, 2), requests=1, characters=300))
        for i, state in enumerate(["sent", "sent", "awaiting_approval"]):
            s.add(
                Digest(
                    exchange_id="x",
                    period_start=date(2026, 1 + i, 1),
                    period_end=date(2026, 1 + i, 15),
                    language="ru",
                    state=state,
                    token=f"tok{i}",
                )
            )
        s.flush()
        for i, status in enumerate(["sent", "sent", "failed"]):
            s.execute(
                insert(Delivery).values(
                    digest_id=1,
                    email=f"r{i}@example.org",
                    list_id="l",
                    language="ru",
                    status=status,
                    message_id=f"<m{i}@x>",
                    created_at=now,
                )
            )
        s.add(
            JobRun(
                job="fetch",
                started_at=now - timedelta(seconds=3),
                finished_at=now,
                ok=True,
                summary={"new_items": 7, "failed": 0},
            )
        )
        s.add(JobRun(job="fetch", started_at=now - timedelta(seconds=1), finished_at=now, ok=False))
    with served(cfg, db) as url:
        m = _metrics(url)
    assert m[("newsexchange_items", (("region", "joensuu"), ("source", "yle")))] == 3
    assert m[("newsexchange_sources_failing", ())] == 1
    assert m[("newsexchange_translation_characters_total", (("provider", "libre"),))] == 1500
    assert m[("newsexchange_translation_requests_total", (("provider", "libre"),))] == 3
    assert m[("newsexchange_digests", (("exchange", "x"), ("state", "sent")))] == 2
    assert m[("newsexchange_digests", (("exchange", "x"), ("state", "awaiting_approval")))] == 1
    assert m[("newsexchange_deliveries", (("status", "sent"),))] == 2
    assert m[("newsexchange_deliveries", (("status", "failed"),))] == 1
    assert m[("newsexchange_job_runs_total", (("job", "fetch"), ("result", "ok")))] == 1
    assert m[("newsexchange_job_runs_total", (("job", "fetch"), ("result", "failed")))] == 1
    assert m[("newsexchange_job_duration_seconds_count", (("job", "fetch"),))] == 2
    assert m[("newsexchange_fetch_new_items_total", ())] == 7
    assert m[("newsexchange_job_duration_seconds_sum", (("job", "fetch"),))] == pytest.approx(
        4, abs=0.01
    )
