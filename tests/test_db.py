"""The schema: migrations match the models, times stay UTC, on SQLite and PostgreSQL; a new
SQLite file is owner-only; a write waits the configured busy timeout, no longer."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from newsexchange.db import Base, Database, Source
from newsexchange.db.engine import include_name


def test_migrations_create_exactly_the_models(any_db_url: str) -> None:
    db = Database(any_db_url)
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"include_name": include_name}),
                Base.metadata,
            )
        assert diff == [], "models changed without a migration: add one under newsexchange/db/migrations/versions/"
    finally:
        db.dispose()


def test_times_are_stored_in_utc_and_come_back_aware(any_db_url: str) -> None:
    db = Database(any_db_url)
    try:
        helsinki = timezone(timedelta(hours=2))
        with db.session() as s:
            s.add(
                Source(
                    id="a",
                    config_url="u",
                    url="u",
                    last_fetched_at=datetime(2026, 11, 1, 12, 0, tzinfo=helsinki),
                )
            )
        with db.session() as s:
            src = s.scalars(select(Source)).one()
            assert src.last_fetched_at == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
            assert src.last_fetched_at.tzinfo is not None
    finally:
        db.dispose()


def test_naive_datetimes_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path}/x.db")
    try:
        with pytest.raises(Exception, match="naive datetime"), db.session() as s:
            s.add(Source(id="a", config_url="u", url="u", last_fetched_at=datetime(2026, 1, 1)))
            s.flush()
    finally:
        db.dispose()


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive common umask, so only our own modes can make files private."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_sqlite_database_and_its_wal_and_shm_are_owner_only(
    tmp_path: Path, open_umask: None
) -> None:
    path = tmp_path / "var" / "data" / "nx.db"
    db = Database(f"sqlite:///{path}")
    try:
        with db.session() as s:  # a write, so the -wal and -shm files exist
            s.add(Source(id="a", config_url="u", url="u"))
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert wal.exists() and shm.exists()
        assert {p.name: _mode(p) for p in (path, wal, shm)} == {
            "nx.db": 0o600,
            "nx.db-wal": 0o600,
            "nx.db-shm": 0o600,
        }
        assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700
    finally:
        db.dispose()


def test_an_existing_database_file_and_folder_keep_the_mode_they_have(
    tmp_path: Path, open_umask: None
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o750)
    os.chmod(folder, 0o750)  # noqa: S103 (the operator's own, looser choice)
    path = folder / "nx.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)
    db = Database(f"sqlite:///{path}")
    try:
        with db.session() as s:
            s.add(Source(id="a", config_url="u", url="u"))
        assert _mode(folder) == 0o750 and _mode(path) == 0o640
    finally:
        db.dispose()


def test_a_write_waits_only_the_busy_timeout_for_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "nx.db"
    Database(f"sqlite:///{path}").dispose()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    db = Database(f"sqlite:///{path}", run_migrations=False, busy_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"), db.session() as s:
            s.add(Source(id="a", config_url="u", url="u"))
            s.flush()
        waited = time.monotonic() - started
        assert 0.25 <= waited < 5, waited
    finally:
        holder.rollback()
        holder.close()
        db.dispose()
