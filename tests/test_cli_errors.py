"""When the machine fails the command — an unreachable database, a locked SQLite file, a full
disk — the command says so in one line and exits 1 (with --json: one JSON object saying it),
never a traceback. Run as a real process, against real failures."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from newsexchange.config import Config, database_url
from newsexchange.db import Database, Delivery
from newsexchange.delivery.send import run_send
from tests.test_delivery_support import NOW, delivery_config, seed_digest

EXE = str(Path(sys.executable).with_name("newsexchange"))
UNREACHABLE_PG = "postgresql+psycopg://nobody:hunter2-secret@127.0.0.1:1/test"


def _run(args: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args],
        env={**os.environ, "NEWSEXCHANGE_SECRET_KEY": "s3cret", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line_failure(res: subprocess.CompletedProcess[str], *, json_mode: bool) -> str:
    """The failure as the user sees it, after checking the shape of the output."""
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("newsexchange: ")
    if json_mode:
        data = json.loads(res.stdout)  # exactly one JSON object, nothing else
        assert res.stdout.count("\n") == 1
        assert data["ok"] is False
        assert data["error"] == lines[0].removeprefix("newsexchange: ")
        return str(data["error"])
    assert res.stdout == ""
    return lines[0]


@pytest.mark.parametrize("json_mode", [True, False], ids=["json", "text"])
def test_an_unreachable_postgresql_is_one_line_and_exit_1(
    write_config: Callable[..., Config], json_mode: bool
) -> None:
    cfg = write_config()
    res = _run(
        ["send", "1", "--config", str(cfg.path), *(["--json"] if json_mode else [])],
        env={"NEWSEXCHANGE_DATABASE_URL": UNREACHABLE_PG},
    )
    error = _one_line_failure(res, json_mode=json_mode)
    assert "127.0.0.1:1" in error and "refused" in error.lower(), error
    assert "hunter2-secret" not in res.stdout + res.stderr, "the password is never printed"
    assert "sqlalche.me" not in error and "[SQL:" not in error


def test_a_sqlite_file_locked_by_another_writer_is_one_line_and_exit_1(
    write_config: Callable[..., Config],
) -> None:
    cfg = write_config("database_busy_timeout: 0.3\n")
    Database(database_url(cfg)).dispose()  # created and migrated
    path = database_url(cfg).removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process mid-way through a long write
    try:
        res = _run(["send", "1", "--config", str(cfg.path), "--json"])
    finally:
        holder.rollback()
        holder.close()
    # (There is no digest 1: the command never got past opening the database.)
    error = _one_line_failure(res, json_mode=True)
    assert re.search(r"database \(sqlite:///.*test\.db\) is locked", error), error
    assert "database_busy_timeout" in error


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_outbox_folder_and_its_messages_are_owner_only(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database], open_umask: None
) -> None:
    cfg = delivery_config(write_config, backend="outbox")
    db = db_for(cfg)
    did = seed_digest(db, cfg, 3)
    report = run_send(db, cfg, now=NOW, digest_id=did)
    assert report.sent == 3
    outbox = cfg.resolve(cfg.mail.outbox_dir)
    files = sorted(outbox.iterdir())
    assert len(files) == 3 and all(f.suffix == ".eml" for f in files)
    assert _mode(outbox) == 0o700 and _mode(outbox.parent) == 0o700  # var/ and var/outbox
    assert {_mode(f) for f in files} == {0o600}


def test_a_full_disk_under_the_outbox_stops_the_send_in_one_line_and_hands_the_rows_back(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    cfg = delivery_config(write_config, backend="outbox")
    db = db_for(cfg)
    did = seed_digest(db, cfg, 4)
    with db.session() as s:
        rows = list(s.scalars(select(Delivery).order_by(Delivery.id)))
    # A real ENOSPC: the second message's temporary file is /dev/full (a device whose every
    # write fails with "No space left on device"), so one message is written, then the disk
    # is "full".
    outbox = cfg.resolve(cfg.mail.outbox_dir)
    outbox.mkdir(parents=True)
    stem = re.sub(r"[^A-Za-z0-9._@-]+", "_", rows[1].message_id.strip("<>"))[:180]
    (outbox / f"{stem}.eml.tmp").symlink_to("/dev/full")

    res = _run(["send", str(did), "--config", str(cfg.path), "--json"])
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    data = json.loads(res.stdout)
    assert data["ok"] is False and data["sent"] == 1
    assert "No space left on device" in data["error"] and "outbox" in data["error"]
    assert not (outbox / f"{stem}.eml.tmp").exists(), "no half-written file is left"
    with db.session() as s:
        status = {d.id: d.status for d in s.scalars(select(Delivery))}
    assert status[rows[0].id] == "sent"
    assert "claimed" not in status.values(), "the unsent rows are handed back"
    assert sorted(status.values()).count("sent") == 1


@pytest.mark.parametrize("json_mode", [True, False], ids=["json", "text"])
def test_a_full_disk_under_a_file_the_command_writes_is_one_line_and_exit_1(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database], json_mode: bool
) -> None:
    cfg = delivery_config(write_config, backend="outbox")
    seed_digest(db_for(cfg), cfg, 2)
    res = _run(
        [
            "lists",
            "export",
            "petrozavodsk-media",
            "--output",
            "/dev/full",  # every write: OSError(ENOSPC)
            "--config",
            str(cfg.path),
            *(["--json"] if json_mode else []),
        ]
    )
    error = _one_line_failure(res, json_mode=json_mode)
    assert "no space left on the device" in error, error


@pytest.mark.parametrize(
    "args",
    [
        ["send", "99999999999999999999"],
        ["digest", "show", "9223372036854775808"],
        ["approve", "99999999999999999999"],
        ["items", "--limit", "99999999999999999999"],
        ["translation", "show", "-1"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_an_id_or_count_the_database_cannot_hold_is_a_usage_error(
    write_config: Callable[..., Config], args: list[str]
) -> None:
    cfg = write_config()
    res = _run([*args, "--config", str(cfg.path), "--json"])
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "OverflowError" not in res.stderr
    data = json.loads(res.stdout)
    assert data["ok"] is False and "out of range" in data["error"], data
