"""Scale-out figures on PostgreSQL (issue 13), each part printed as it finishes.

    .venv/bin/python benchmarks/scale.py [--recipients 20000] [--contacts 100000]
                                         [--only send,kill,start,import,approve]

- ``send``: one digest to ``--recipients`` journalists with 1, 2 and 3 workers
  (``newsexchange worker`` processes sharing the queue), against a fast local SMTP sink with
  the rate limit lifted: msg/s and the share each worker sent (benchmarks/scale_send.py).
- ``kill``: ``kill -9`` of one of two workers mid-send: seconds until another resumes its
  shard, duplicates, misses (benchmarks/scale_send.py).
- ``start``: 4 processes started at once on an empty database: how many came up, seconds.
- ``import``: a list of ``--contacts`` contacts imported, then imported again
  (benchmarks/scale_import.py), on PostgreSQL and SQLite.
- ``approve``: the editor's approval of a digest whose list has ``--contacts`` contacts,
  through the web app's approval route (benchmarks/scale_approve.py).

Each part runs on a fresh database ``nx_bench_<random>`` created through
``$NEWSEXCHANGE_TEST_PG`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and
dropped after. Targets (issue 13): each of 2 workers ≥ 30 %; resume ≤ 30 s with 0 misses;
all 4 processes up; import ≤ 30 s; approval < 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PG_ADMIN_URL = os.environ.get(
    "NEWSEXCHANGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one part; dropped afterwards."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"nx_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


START = "import sys\nfrom newsexchange.db import Database\nDatabase(sys.argv[1]).dispose()\nprint('ok')\n"


def run_start(url: str, processes: int = 4) -> dict[str, object]:
    """``processes`` interpreters opening (and so migrating) one empty database at once."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", START, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    up = sum(1 for out, _err in results if out.strip() == "ok")
    errors = [err.strip().splitlines()[-1] for out, err in results if out.strip() != "ok"]
    return {
        "processes": processes,
        "came_up": up,
        "seconds": round(time.perf_counter() - started, 2),
        "errors": errors,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipients", type=int, default=20_000)
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--only", default="send,kill,start,import,approve")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    results: dict[str, object] = {}

    def show(name: str, value: object) -> None:
        results[name] = value
        print(f"{name}: {json.dumps(value, ensure_ascii=False)}", flush=True)

    if "send" in parts:
        import scale_send

        for workers in (1, 2, 3):
            with fresh_database() as url:
                show(f"send_{workers}_workers", scale_send.run(url, args.recipients, workers))
    if "kill" in parts:
        import scale_send

        with fresh_database() as url:
            show("kill_one_of_two", scale_send.run_kill(url, args.recipients))
    if "start" in parts:
        with fresh_database() as url:
            show("start_4_at_once", run_start(url, 4))
    if "import" in parts:
        import scale_import

        with fresh_database() as url:
            show("import_postgres", scale_import.run(url, args.contacts))
        with contextlib.ExitStack() as stack:
            import tempfile

            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            show("import_sqlite", scale_import.run(f"sqlite:///{tmp}/import.db", args.contacts))
    if "approve" in parts:
        import scale_approve

        with fresh_database() as url:
            show("approve_postgres", scale_approve.run(url, args.contacts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
