"""Many processes started at once on an empty PostgreSQL database all come up: the migration
runs once, under a database-wide lock, not once per process (issue 13: 6 of 12 processes
crashed with ``UniqueViolation pg_type_typname_nsp_index`` when the lock was a
``threading.Lock``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from newsexchange.db import Database

pytestmark = pytest.mark.postgres

MIGRATE = (
    "import sys\n"
    "from newsexchange.db import Database\n"
    "Database(sys.argv[1]).dispose()\n"
    "print('ok')\n"
)


def test_processes_started_together_on_an_empty_database_all_migrate(
    pg_server_url: Callable[[], str],
) -> None:
    url = pg_server_url()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    failures = [err.strip().splitlines()[-1] for (out, err) in results if out.strip() != "ok"]
    assert failures == []
    db = Database(url)  # and the schema is the newest one, created once
    try:
        with db.engine.connect() as c:
            versions = c.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        assert [v[0] for v in versions] == ["0007"]
    finally:
        db.dispose()
