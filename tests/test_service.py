"""The background service: leases, the stored schedule, coalesced catch-up, clean stops."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert, select

from newsexchange.config import Config, database_url
from newsexchange.db import Database, JobRun, Lock, utcnow
from newsexchange.service import (
    SecretRedactor,
    Service,
    acquire_lock,
    config_secrets,
    job_specs,
    release_lock,
    renew_lock,
    stored_jobs,
)

REPO = Path(__file__).resolve().parent.parent
NX = str(REPO / ".venv" / "bin" / "newsexchange")

FAST = """\
fetch: {interval_minutes: 30}
service: {alerts_minutes: 0.02, approvals_minutes: 60, dispatch_minutes: 60, jitter_seconds: 0}
"""


def _wait(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def _runs(db: Database, job: str) -> list[JobRun]:
    with db.session() as s:
        return list(s.scalars(select(JobRun).where(JobRun.job == job).order_by(JobRun.started_at)))


# -- leases --------------------------------------------------------------------------------


def test_lease_is_held_by_one_owner_until_released_or_expired(any_db_url: str) -> None:
    db = Database(any_db_url)
    try:
        now = utcnow()
        assert acquire_lock(db, "job:x", "a", ttl=60, now=now)
        assert not acquire_lock(db, "job:x", "b", ttl=60, now=now)
        assert acquire_lock(db, "job:x", "a", ttl=60, now=now), "the owner may re-acquire"
        assert renew_lock(db, "job:x", "a", ttl=60, now=now)
        assert not renew_lock(db, "job:x", "b", ttl=60, now=now)
        release_lock(db, "job:x", "b")  # not b's: changes nothing
        assert not acquire_lock(db, "job:x", "b", ttl=60, now=now)
        # Expired: the next taker wins, and the old owner learns it lost the lease.
        later = now + timedelta(seconds=61)
        assert acquire_lock(db, "job:x", "b", ttl=60, now=later)
        assert not renew_lock(db, "job:x", "a", ttl=60, now=later)
        release_lock(db, "job:x", "b")
        assert acquire_lock(db, "job:x", "a", ttl=60, now=later)
    finally:
        db.dispose()


def test_racing_acquirers_on_two_engines_get_exactly_one_lease(any_db_url: str) -> None:
    dbs = [Database(any_db_url), Database(any_db_url, run_migrations=False)]
    try:
        now = utcnow()
        barrier = threading.Barrier(8)
        wins: list[str] = []

        def contend(i: int) -> None:
            barrier.wait()
            if acquire_lock(dbs[i % 2], "job:race", f"owner-{i}", ttl=60, now=now):
                wins.append(f"owner-{i}")

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        with dbs[0].session() as s:
            assert s.scalar(select(Lock.owner).where(Lock.name == "job:race")) == wins[0]
    finally:
        for d in dbs:
            d.dispose()


def test_lease_left_by_a_killed_process_is_taken_over_at_once(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/l.db")
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        alive_owner = f"{socket.gethostname()}:{os.getppid()}:tag"
        with db.session() as s:
            future = utcnow() + timedelta(hours=1)
            s.execute(
                insert(Lock).values(
                    name="job:send",
                    owner=f"{socket.gethostname()}:{dead.pid}:tag",
                    expires_at=future,
                )
            )
            s.execute(insert(Lock).values(name="job:fetch", owner=alive_owner, expires_at=future))
        assert acquire_lock(db, "job:send", "me", ttl=60, now=utcnow())
        assert not acquire_lock(db, "job:fetch", "me", ttl=60, now=utcnow()), (
            "a live process keeps its lease"
        )
    finally:
        db.dispose()


# -- the schedule --------------------------------------------------------------------------


def test_schedule_follows_feeds_yaml(write_config: Callable[..., Config]) -> None:
    cfg = write_config(
        """\
        fetch: {interval_minutes: 20}
        service: {jitter_seconds: 600}
        exchanges:
          - {id: fi-to-ru, from: [joensuu], to: petrozavodsk, language: ru,
             schedule: {days: [1, 16], time: "09:00"}, editors: [e@example.fi]}
        """
    )
    specs = {s.id: s for s in job_specs(cfg)}
    assert set(specs) == {"fetch", "approvals", "send", "alerts", "digest:fi-to-ru"}
    # jitter is capped at a quarter of the interval, so fetches never bunch up
    assert specs["fetch"].trigger.jitter == 300
    digest = specs["digest:fi-to-ru"].trigger
    # 09:00 in the readers' zone (Moscow, UTC+3): 06:00 UTC on the 16th
    nxt = digest.get_next_fire_time(None, datetime(2026, 11, 3, tzinfo=UTC))
    assert nxt.astimezone(UTC) == datetime(2026, 11, 16, 6, 0, tzinfo=UTC)
    with_imap = write_config("mail: {imap: {host: imap.example.org}}\n", base=_base_with_mail())
    assert "imap" in {s.id for s in job_specs(with_imap)}


def _base_with_mail() -> str:
    from tests.conftest import BASE_CONFIG

    return BASE_CONFIG.split("mail:")[0]


def test_two_services_on_one_database_never_run_the_same_job_twice(
    any_db_url: str, write_config: Callable[..., Config]
) -> None:
    cfg = write_config(FAST, env={"NEWSEXCHANGE_DATABASE_URL": any_db_url})
    dbs = [Database(any_db_url), Database(any_db_url, run_migrations=False)]
    services = [Service(cfg, d, lock_ttl=30) for d in dbs]
    try:
        for svc in services:
            svc.start()
        time.sleep(4)
    finally:
        for svc in services:
            svc.stop()
    runs = _runs(dbs[0], "alerts")
    assert runs, "the alerts job ran"
    assert all(r.finished_at is not None and r.ok for r in runs)
    for a, b in itertools.pairwise(runs):
        assert a.finished_at is not None
        assert b.started_at >= a.finished_at, "two runs of one job overlapped"
        gap = (b.started_at - a.started_at).total_seconds()
        assert gap >= 0.6, f"the same slot ran twice ({gap:.2f}s apart)"
    # every 1.2 s for 4 s: about 4 slots, not twice that
    assert len(runs) <= 5
    for d in dbs:
        d.dispose()


def test_runs_missed_while_down_are_coalesced_into_one_run_on_start(
    write_config: Callable[..., Config],
) -> None:
    cfg = write_config(
        "service: {alerts_minutes: 1, approvals_minutes: 60, dispatch_minutes: 60}\n"
    )
    db = Database(database_url(cfg))
    try:
        # The service ran before and stopped; alerts (every minute) was due 10 minutes ago:
        # ten slots were missed while it was down.
        first = Service(cfg, db)
        first._start_paused()
        now = utcnow()
        for job in first.scheduler.get_jobs():
            later = now + timedelta(hours=1)
            first.scheduler.modify_job(
                job.id, next_run_time=now - timedelta(minutes=10) if job.id == "alerts" else later
            )
        first.scheduler.shutdown(wait=False)
        before = {j["id"]: j["next_run_at"] for j in stored_jobs(db)}
        assert before["alerts"] < now - timedelta(minutes=9)

        second = Service(cfg, db)
        second.start()
        try:
            assert _wait(lambda: len(_runs(db, "alerts")) >= 1)
            time.sleep(1.0)  # room for any further (wrong) catch-up runs
            attempts = [o for o in second.history if o.job == "alerts"]
            assert len(attempts) == 1, f"expected one coalesced run, got {attempts}"
            assert len(_runs(db, "alerts")) == 1
            after = {j["id"]: j["next_run_at"] for j in stored_jobs(db)}
            assert after["alerts"] > utcnow(), "the next run is in the future again"
            assert after["fetch"] == before["fetch"], "unchanged jobs keep their stored schedule"
        finally:
            second.stop()
    finally:
        db.dispose()


def test_a_changed_schedule_replaces_the_stored_job(write_config: Callable[..., Config]) -> None:
    cfg = write_config("fetch: {interval_minutes: 30}\n")
    db = Database(database_url(cfg))
    try:
        svc = Service(cfg, db)
        svc._start_paused()
        svc.scheduler.shutdown(wait=False)
        cfg2 = write_config("fetch: {interval_minutes: 45}\n")
        svc2 = Service(cfg2, db)
        svc2._start_paused()
        try:
            result = svc2.reconcile()
            assert result["fetch"] == "kept"  # reconcile ran at start already: now current
            job = svc2.scheduler.get_job("fetch")
            assert job.trigger.interval == timedelta(minutes=45)
        finally:
            svc2.scheduler.shutdown(wait=False)
    finally:
        db.dispose()


# -- the process ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_stops_the_service_cleanly_with_exit_0(
    tmp_path: Path, write_config: Callable[..., Config]
) -> None:
    cfg = write_config(FAST)
    port = _free_port()
    env = {
        **os.environ,
        "NEWSEXCHANGE_SECRET_KEY": "s3cret-signing-key",
        "NEWSEXCHANGE_LOG_LEVEL": "info",
    }
    proc = subprocess.Popen(
        [NX, "serve", "--config", str(cfg.path), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait(lambda: _healthy(port), timeout=20), "the service did not come up"
        db = Database(database_url(cfg), run_migrations=False)
        assert _wait(lambda: bool(_runs(db, "alerts")))
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "signal received: stopping" in events
    assert events[-1] == "stopped"
    assert "s3cret-signing-key" not in err
    unfinished = [r for r in _runs(db, "alerts") if r.finished_at is None]
    assert unfinished == [], "a job run was left half-written"
    db.dispose()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_run_once_prints_one_json_object_with_every_step_in_order(
    write_config: Callable[..., Config],
) -> None:
    cfg = write_config("")
    res = subprocess.run(
        [NX, "run-once", "--json", "--config", str(cfg.path)],
        capture_output=True,
        text=True,
        env={**os.environ, "NEWSEXCHANGE_SECRET_KEY": "x" * 20},
        timeout=60,
    )
    data = json.loads(res.stdout)
    assert list(data["steps"]) == ["fetch", "translate", "impact", "digest", "approvals", "send", "alerts"]
    assert res.returncode == (0 if data["ok"] else 1)
    assert data["steps"]["alerts"]["status"] == "ok"
    db = Database(database_url(cfg), run_migrations=False)
    try:
        ran = {r.job for r in _runs(db, "alerts")}
        assert ran == {"alerts"}
    finally:
        db.dispose()


# -- logs ----------------------------------------------------------------------------------


def test_secrets_of_the_configuration_never_reach_the_log(
    write_config: Callable[..., Config],
) -> None:
    cfg = write_config(
        "translation: {providers: [{name: libre, url: 'http://127.0.0.1:9', api_key_env: LT_KEY}]}\n",
        env={"LT_KEY": "lt-key-123456", "NEWSEXCHANGE_SECRET_KEY": "signing-key-abcdef"},
    )
    redactor = SecretRedactor(config_secrets(cfg))
    record = logging.LogRecord(
        "newsexchange.x", logging.ERROR, __file__, 1, "failed %s", ("key=lt-key-123456",), None
    )
    record.url = "http://libre/translate?api_key=lt-key-123456"
    record.summary = {"error": "bad key lt-key-123456"}
    try:
        raise RuntimeError("token signing-key-abcdef rejected")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert redactor.filter(record)
    text = logging.Formatter().format(record) + str(vars(record))
    assert "lt-key-123456" not in text
    assert "signing-key-abcdef" not in text
    assert "***" in record.getMessage()


def test_every_job_and_run_once_step_has_a_row_in_the_steps_table(
    write_config: Callable[..., Config],
) -> None:
    """The steps are wired by plain imports in one table (no step is looked up by name at
    run time, so none can be "unavailable"): every job the schedule makes and every step of
    run-once names a row of it."""
    from newsexchange import service

    cfg = write_config("mail: {imap: {host: imap.example.org}}\n", base=_base_with_mail())
    named = {spec.id.partition(":")[0] for spec in job_specs(cfg)} | set(service.RUN_ONCE_ORDER)
    assert named == set(service.STEPS)
    assert all(step.name == name and callable(step.run) for name, step in service.STEPS.items())


def test_a_busy_port_is_a_usage_error_before_any_job_runs(
    write_config: Callable[..., Config],
) -> None:
    cfg = write_config(FAST)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(
            [NX, "serve", "--config", str(cfg.path), "--port", str(port)],
            capture_output=True,
            text=True,
            env={**os.environ, "NEWSEXCHANGE_SECRET_KEY": "x" * 20},
            timeout=60,
        )
    assert res.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
    db = Database(database_url(cfg), run_migrations=False)
    try:
        assert _runs(db, "alerts") == [], "no job ran"
    finally:
        db.dispose()


def test_two_service_processes_on_postgresql_share_the_work_without_doubles(
    pg_server_url: Callable[[], str], write_config: Callable[..., Config]
) -> None:
    """The production shape: two `newsexchange serve` processes on one PostgreSQL."""
    url = pg_server_url()
    cfg = write_config(FAST, env={"NEWSEXCHANGE_DATABASE_URL": url})
    env = {**os.environ, "NEWSEXCHANGE_SECRET_KEY": "x" * 20, "NEWSEXCHANGE_DATABASE_URL": url}
    Database(url).dispose()  # migrate once, as a deploy step would
    ports = [_free_port(), _free_port()]
    procs = [
        subprocess.Popen(
            [NX, "serve", "--config", str(cfg.path), "--port", str(p)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        for p in ports:
            assert _wait(lambda p=p: _healthy(p), timeout=30)
        time.sleep(3)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=30) for proc in procs]
    assert codes == [0, 0]
    db = Database(url, run_migrations=False)
    try:
        runs = _runs(db, "alerts")
        with db.session() as s:
            leftover = list(s.scalars(select(Lock.name)))
    finally:
        db.dispose()
    assert len(runs) >= 2
    for a, b in itertools.pairwise(runs):
        assert a.finished_at is not None and b.started_at >= a.finished_at, "runs overlapped"
        assert (b.started_at - a.started_at).total_seconds() >= 0.6, "one slot ran twice"
    assert leftover == [], "every lease was released at the stop"


def test_jobs_command_shows_the_stored_schedule_and_the_latest_runs(
    write_config: Callable[..., Config],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from newsexchange.cli import main

    cfg = write_config(
        """\
        exchanges:
          - {id: fi-to-ru, from: [joensuu], to: petrozavodsk, language: ru, editors: [e@example.fi]}
        """
    )
    db = Database(database_url(cfg))
    root = logging.getLogger("newsexchange")
    saved = (list(root.handlers), root.level, root.propagate)
    try:
        svc = Service(cfg, db)
        svc._start_paused()
        svc.scheduler.shutdown(wait=False)
        with db.session() as s:
            s.add(
                JobRun(
                    job="fetch", started_at=utcnow(), finished_at=utcnow(), ok=False, error="boom"
                )
            )
        monkeypatch.setenv("NEWSEXCHANGE_SECRET_KEY", "x" * 20)
        assert main(["jobs", "--json", "--config", str(cfg.path)]) == 0
        data = json.loads(capsys.readouterr().out)
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
        db.dispose()
    by = {j["job"]: j for j in data["jobs"]}
    assert data["scheduled"] is True
    assert by["fetch"]["last_ok"] is False and by["fetch"]["last_error"] == "boom"
    assert by["fetch"]["failures"] == 1
    # the digest is built at 09:00 Moscow time = 06:00 UTC, on the 1st or the 16th
    nxt = datetime.fromisoformat(by["digest:fi-to-ru"]["next_run"])
    assert (nxt.day, nxt.astimezone(UTC).hour) in {(1, 6), (16, 6)}
