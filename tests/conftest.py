"""Shared fixtures: real local servers, configs written to tmp, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from newsexchange.config import Config, database_url, load_config
from newsexchange.db import Database
from tests.servers import HTTPServer, SMTPServer

REPO = Path(__file__).resolve().parent.parent
CORPUS = (REPO.parent / "shared" / "corpus" / "feedparser").resolve()
PG_ADMIN_URL = os.environ.get(
    "NEWSEXCHANGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def http_server() -> Iterator[HTTPServer]:
    server = HTTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer().start()
    yield server
    server.stop()


BASE_CONFIG = """\
timezone: Europe/Helsinki
database_url: sqlite:///var/test.db
public_url: http://127.0.0.1:8080
mail:
  backend: outbox
  from: "Exchange <news@example.org>"
  outbox_dir: var/outbox
regions:
  joensuu:      {name: Joensuu, language: fi, timezone: Europe/Helsinki}
  petrozavodsk: {name: Petrozavodsk, language: ru, timezone: Europe/Moscow}
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Config]:
    """Write feeds.yaml (BASE_CONFIG plus the given YAML) into tmp_path and load it."""

    def _write(
        extra: str = "",
        *,
        base: str = BASE_CONFIG,
        env: dict[str, str] | None = None,
        name: str = "feeds.yaml",
    ) -> Config:
        path = tmp_path / name
        path.write_text(base + textwrap.dedent(extra), encoding="utf-8")
        return load_config(path, env={"NEWSEXCHANGE_SECRET_KEY": "test-secret", **(env or {})})

    return _write


def _pg_available() -> str | None:
    try:
        import psycopg  # noqa: F401
        from sqlalchemy import create_engine, text

        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # any failure means: no PostgreSQL here
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty PostgreSQL databases (dropped at the end of the session)."""
    reason = _pg_available()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make() -> str:
        name = f"nx_{uuid.uuid4().hex[:12]}"
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    yield make
    with admin.connect() as c:
        for name in created:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/any.db"
    factory: Callable[[], str] = request.getfixturevalue("pg_server_url")
    return factory()


@pytest.fixture
def db_for() -> Iterator[Callable[[Config], Database]]:
    opened: list[Database] = []

    def _open(cfg: Config) -> Database:
        d = Database(database_url(cfg))
        opened.append(d)
        return d

    yield _open
    for d in opened:
        d.dispose()


CLOCK_AHEAD = os.environ.get("NEWSEXCHANGE_TEST_CLOCK_AHEAD_DAYS", "").strip()


def pytest_report_header() -> str | None:
    if CLOCK_AHEAD:
        return f"clock moved {CLOCK_AHEAD} days ahead (tests/clock_ahead/sitecustomize.py)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In the run a year ahead only Python's clock moves: a test that compares it with the
    clock of a server that is not Python (``real_clock``) is skipped there, visibly."""
    if not CLOCK_AHEAD:
        return
    skip = pytest.mark.skip(
        reason=f"real_clock: the clock is moved {CLOCK_AHEAD} days ahead in Python only, "
        "and this test compares it with a server's real clock"
    )
    for item in items:
        if "real_clock" in item.keywords:
            item.add_marker(skip)
