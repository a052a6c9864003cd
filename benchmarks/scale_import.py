"""Bulk list import: n contacts from one CSV into a fresh database, then the same file again.

    .venv/bin/python benchmarks/scale_import.py [--n 100000] [--url URL | --postgres]

The CSV is what a programme's media list looks like after years of spreadsheets: Finnish and
Russian names and outlets, a second list named in ``lists`` for some rows, notes, about 2 %
duplicate rows (the same address in another case, filling fields the first row left empty)
and about 0.5 % bad lines (an address that is not one, an unsupported language, a stray
field). It is imported with the code the ``lists import`` command runs (``parse_csv`` +
``import_rows`` in one transaction), then imported again, which must change nothing.

Prints (and :func:`run` returns) the seconds of both imports, rows/s of the first, the
report counts and the memory: the process's peak RSS after the first import, and how much
of it that import added (tracemalloc would say more but slows the import threefold).
Default database: a temporary SQLite file; ``--postgres`` creates ``nx_bench_<random>``
on 127.0.0.1:5432 (through the ``test`` database, trust auth) and drops it afterwards.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsexchange.db import Database
from newsexchange.delivery.lists import import_rows, parse_csv

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LIST_ID = "barents-media"
OTHER_LISTS = ["karelia-press", "joensuu-media"]
NOW = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

FI_FIRST = ["Aino", "Eero", "Liisa", "Mikko", "Sanna", "Juha", "Päivi", "Tuomas", "Hanna", "Ville"]
FI_LAST = ["Korhonen", "Virtanen", "Mäkinen", "Nieminen", "Hämäläinen", "Laine", "Heikkinen"]
RU_FIRST = ["Анна", "Дмитрий", "Ольга", "Сергей", "Мария", "Алексей", "Екатерина", "Иван"]
RU_LAST = ["Смирнова", "Орлов", "Кузнецова", "Попов", "Соколова", "Лебедев", "Новикова"]
FI_OUTLETS = ["Yle Pohjois-Karjala", "Karjalainen", "Kaleva", "Lapin Kansa", "Radio Pooki"]
RU_OUTLETS = ["ГТРК «Карелия»", "Столица на Онего", "Мурманский вестник", "Север.Реалии"]


def make_csv(n: int, *, seed: int = 13) -> str:
    """A media-list CSV of about ``n`` data rows (see the module docstring for its mix)."""
    rnd = random.Random(seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "email", "outlet", "language", "lists", "notes"])
    written: list[str] = []
    for i in range(n):
        roll = rnd.random()
        if roll < 0.005:
            bad = rnd.choice(
                [
                    ["Broken", f"no-at-sign-{i}.example.org", "", "ru", "", ""],
                    ["Deutsch", f"de{i}@example.org", "", "de", "", ""],
                    ["Stray", f"stray{i}@example.org", "", "fi", "", "", "extra"],
                ]
            )
            w.writerow(bad)
            continue
        if roll < 0.025 and written:
            # A duplicate: another spelling of an earlier address, filling in a note.
            w.writerow(["", rnd.choice(written).upper(), "", "", rnd.choice(OTHER_LISTS), "dup"])
            continue
        if rnd.random() < 0.5:
            first, last, outlet, lang = (
                rnd.choice(FI_FIRST), rnd.choice(FI_LAST), rnd.choice(FI_OUTLETS), "fi"
            )  # fmt: skip
            local = f"{first}.{last}".lower().replace("ä", "a").replace("ö", "o")
        else:
            first, last, outlet, lang = (
                rnd.choice(RU_FIRST), rnd.choice(RU_LAST), rnd.choice(RU_OUTLETS), "ru"
            )  # fmt: skip
            local = f"journalist.{rnd.randrange(10**6)}"
        email = f"{local}.{i}@{rnd.choice(['example.org', 'media.example.com', 'пример.рф'])}"
        written.append(email)
        lists = rnd.choice(OTHER_LISTS) if rnd.random() < 0.2 else ""
        notes = "freelance" if rnd.random() < 0.1 else ""
        w.writerow([f"{first} {last}", email, outlet, lang, lists, notes])
    return buf.getvalue()


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new empty database on the local PostgreSQL, dropped on exit."""
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


def _import(db: Database, text: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    parsed = parse_csv(text, list_id=LIST_ID, known_lists=[LIST_ID, *OTHER_LISTS])
    with db.session() as s:
        report = import_rows(s, parsed, list_id=LIST_ID, now=NOW)
    return time.perf_counter() - started, report.to_json()


def run(url: str, n: int) -> dict[str, Any]:
    """Import a generated CSV of ``n`` contacts into the (fresh) database at ``url``, twice.

    Returns the seconds of the first and second import, rows/s of the first, the counts of
    both reports (the second must be all ``unchanged``) and the peak RSS in MiB.
    """
    text = make_csv(n)
    db = Database(url)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        first_s, first = _import(db, text)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        second_s, second = _import(db, text)
    finally:
        db.dispose()

    def counts(r: dict[str, Any]) -> dict[str, int]:
        keys = ("read", "imported", "updated", "unchanged", "merged_duplicates", "suppressed")
        return {k: int(r[k]) for k in keys} | {"skipped": len(r["skipped"])}

    return {
        "backend": url.split(":", 1)[0].split("+", 1)[0],
        "n": n,
        "first_import_s": round(first_s, 2),
        "second_import_s": round(second_s, 2),
        "rows_per_s": round(first["read"] / first_s),
        "peak_rss_mib": round(after / 1024, 1),
        "import_rss_growth_mib": round((after - before) / 1024, 1),
        "first": counts(first),
        "second": counts(second),
        "second_changed_nothing": second["imported"] == second["updated"] == 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--url", help="database URL (default: a temporary SQLite file)")
    ap.add_argument("--postgres", action="store_true", help="a fresh database on 127.0.0.1")
    args = ap.parse_args()
    if args.postgres:
        with fresh_postgres() as url:
            result = run(url, args.n)
    elif args.url:
        result = run(args.url, args.n)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(f"sqlite:///{tmp}/bench.db", args.n)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
