"""The source watchdog at scale: 1,000 sources × 50 recent items (and older ones beside).

    .venv/bin/python benchmarks/watchdog.py [--sources 1000] [--items 50] [--old 50] [--db URL]

What it does: fills a fresh SQLite database (or ``--db``, e.g. an empty PostgreSQL database)
with ``--sources`` sources of two regions, each with ``--items`` items first seen in the last
days and ``--old`` items from months before (outside the watchdog's window, but in the
table: the queries must not read them). One source in ten writes about another region, one in
ten stopped publishing six weeks ago, one in ten is detected in the other language. Then it
runs :func:`~newsexchange.ingest.watchdog.watch_sources` — what ``check --sources``,
``/readyz`` and the alerts job run — three times.

Prints the seconds of the two queries and of the whole run (best of three), how many rows
were read and the findings by kind. JSON with every figure on the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from newsexchange.config import load_config  # noqa: E402
from newsexchange.db import Database, Item, Source  # noqa: E402
from newsexchange.db.queries import watchdog as queries  # noqa: E402
from newsexchange.ingest.watchdog import RECENT_DAYS, RECENT_ITEMS, watch_sources  # noqa: E402

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TEXT = {
    "home": "Joensuussa avattiin uusi kirjasto, kertoo kaupunki. {} kävijää ensimmäisenä päivänä.",
    "away": "Lappeenrannassa avattiin uusi kirjasto, kertoo kaupunki. {} kävijää ensimmäisenä.",
}
CONFIG = """\
database_url: {url}
regions:
  joensuu: {{name: Joensuu, language: fi, places: [Joensuu, Liperi, Kitee, Outokumpu]}}
  petrozavodsk: {{name: Petrozavodsk, language: ru, places: [Петрозаводск, Кондопога]}}
sources:
{sources}
"""


def _fill(db: Database, sources: int, items: int, old: int) -> None:
    with db.session() as s:
        s.execute(
            insert(Source),
            [
                {
                    "id": f"s{i}",
                    "config_url": "u",
                    "url": "u",
                    "watched_since": NOW - timedelta(days=400),
                }
                for i in range(sources)
            ],
        )
        for i in range(sources):
            away, stopped, wrong = i % 10 == 1, i % 10 == 2, i % 10 == 3
            last = NOW - timedelta(days=42 if stopped else 0, hours=1)
            rows = []
            for j in range(items + old):
                seen = (
                    last - timedelta(hours=j) - (timedelta(days=200) if j >= items else timedelta())
                )
                rows.append(
                    {
                        "source_id": f"s{i}",
                        "identity": f"s{i}-{j}",
                        "title": f"Uutinen {j}",
                        "summary_text": TEXT["away" if away else "home"].format(j),
                        "region": "joensuu",
                        "language": "fi",
                        "detected_language": "ru" if wrong else "fi",
                        "language_mismatch": wrong,
                        "published_at": seen,
                        "first_seen_at": seen,
                        "updated_at": seen,
                        "content_hash": f"h{i}-{j}",
                    }
                )
            s.execute(insert(Item), rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--items", type=int, default=50)
    ap.add_argument("--old", type=int, default=50)
    ap.add_argument("--db", default=None, help="database URL (default: a temporary SQLite file)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{tmp}/watchdog.db"
        sources = "\n".join(
            f'  - {{id: s{i}, region: joensuu, url: "https://s{i}.example/rss", language: fi}}'
            for i in range(args.sources)
        )
        path = Path(tmp) / "feeds.yaml"
        path.write_text(CONFIG.format(url=url, sources=sources), encoding="utf-8")
        config = load_config(path, env={"NEWSEXCHANGE_SECRET_KEY": "bench"})
        db = Database(url)
        t0 = time.perf_counter()
        _fill(db, args.sources, args.items, args.old)
        fill_s = time.perf_counter() - t0

        activity_s = recent_s = run_s = float("inf")
        rows = 0
        report = None
        for _ in range(3):
            t = time.perf_counter()
            with db.session() as s:
                queries.source_activity(s)
            activity_s = min(activity_s, time.perf_counter() - t)
            t = time.perf_counter()
            with db.session() as s:
                rows = len(
                    queries.recent_items(
                        s, since=NOW - timedelta(days=RECENT_DAYS), per_source=RECENT_ITEMS
                    )
                )
            recent_s = min(recent_s, time.perf_counter() - t)
            t = time.perf_counter()
            report = watch_sources(db, config, now=NOW)
            run_s = min(run_s, time.perf_counter() - t)
        db.dispose()
    assert report is not None
    kinds = Counter(f.kind for f in report.findings)
    total = args.sources * (args.items + args.old)
    print(f"{args.sources} sources × {args.items} recent items (+{args.old} old; {total} rows)")
    print(f"  fill: {fill_s:.1f} s")
    print(f"  source_activity (newest item per source): {activity_s * 1000:.0f} ms")
    print(f"  recent_items ({rows} rows read): {recent_s * 1000:.0f} ms")
    print(f"  watch_sources (queries + findings): {run_s * 1000:.0f} ms")
    print(f"  findings: {dict(sorted(kinds.items()))}")
    print(
        json.dumps(
            {
                "sources": args.sources,
                "items": args.items,
                "old": args.old,
                "rows_read": rows,
                "activity_seconds": round(activity_s, 4),
                "recent_seconds": round(recent_s, 4),
                "watch_seconds": round(run_s, 4),
                "findings": dict(kinds),
            }
        )
    )


if __name__ == "__main__":
    main()
