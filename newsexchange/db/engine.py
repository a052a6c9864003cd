"""Engine, sessions and migrations.

SQLite by default (WAL, foreign keys on, a busy timeout so the service and a console command
can share the file); the same code runs on PostgreSQL. Alembic migrations
(``newsexchange/db/migrations``) run on start through :func:`migrate`, which reads the stored
revision first and imports Alembic only when it is not :data:`HEAD_REVISION`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from newsexchange.private import create_private_file, make_private_dir

# -- engine, sessions, migrations --------------------------------------------------------------

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_migrate_lock = threading.Lock()  # threads of one process
#: The PostgreSQL advisory lock that serialises migrations across processes and hosts
#: (an arbitrary 63-bit key: "newsexch" in ASCII).
MIGRATION_LOCK_KEY = 0x6E65777365786368
#: The newest migration in ``migrations/versions`` (what a current database is at). Kept by
#: hand beside each new migration so that a command on a current schema compares one string
#: instead of importing Alembic and reading every migration script (issue 16);
#: ``tests/test_startup.py`` fails while it differs from Alembic's own head.
HEAD_REVISION = "0007"


def make_engine(url: str, *, echo: bool = False, busy_timeout: float = 30.0) -> Engine:
    """An engine with the settings this project relies on (WAL and foreign keys on SQLite).

    ``busy_timeout`` (seconds, SQLite): how long a write waits for another process's write
    transaction before it fails with "database is locked"."""
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1] if "///" in url else ""
        if path and path != ":memory:":
            # Owner-only: the file holds contacts and signed links. SQLite gives its -wal and
            # -shm files the mode of the database file, so creating that one 0600 is enough.
            make_private_dir(Path(path).parent)
            create_private_file(Path(path))
        kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
        if path in ("", ":memory:"):
            kwargs["poolclass"] = StaticPool
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # isolation_level None lets SQLAlchemy's own BEGIN below take effect, so a write
            # transaction takes the lock up front (BEGIN IMMEDIATE) and two writers queue on
            # busy_timeout instead of failing with "database is locked" mid-transaction.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


#: Tables the migrations create but do not describe column by column: procrastinate's
#: (migration 0003 applies the schema procrastinate ships, on PostgreSQL). ``alembic check``
#: and autogenerate leave them alone instead of proposing to drop them.
QUEUE_TABLE_PREFIX = "procrastinate_"


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name`` hook: every table but the work queue's."""
    return not (type_ == "table" and name is not None and name.startswith(QUEUE_TABLE_PREFIX))


def stored_revision(engine: Engine) -> str | None:
    """The revision in ``alembic_version``, None when there is no such table (a new database).

    Read through the driver's own cursor: SQLAlchemy's transactions here begin IMMEDIATE on
    SQLite, and a read needs no write lock. Connecting goes through SQLAlchemy, so a database
    that cannot be reached fails as :data:`~newsexchange.db.problems.DatabaseFailure`."""
    with engine.connect() as conn:
        cur = conn.connection.cursor()
        try:
            cur.execute("SELECT version_num FROM alembic_version")
            row = cur.fetchone()
        except engine.dialect.loaded_dbapi.Error:  # no table yet: Alembic will say the rest
            return None
        finally:
            cur.close()
        return str(row[0]) if row else None


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (run on every start; on a current schema one
    read, without Alembic; on PostgreSQL one process at a time, however many start together)."""
    if stored_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with _migrate_lock, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Processes started together (several `serve`s, a deploy's workers) would each
            # create the same tables; this lock, held until the migration commits, lets one
            # migrate while the others wait and then find the schema current.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def schema_revision(db: Database) -> str | None:
    """The migration the database is at (``alembic_version``), None before the first."""
    with db.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class Database:
    """An engine, migrated, with a ``session()`` context manager that commits or rolls back."""

    def __init__(
        self, url: str, *, run_migrations: bool = True, busy_timeout: float = 30.0
    ) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout=busy_timeout)
        if run_migrations:
            migrate(self.engine)
        self.Session = session_factory(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self.Session()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()
