"""Digest build and render speed: a 200-item digest in each of Finnish, Russian and English.

    .venv/bin/python benchmarks/digest.py [--items 250] [--max-items 200] [--repeat 5]

What it does: writes ``--items`` stored items per region (five sources each, a story group
for every tenth item, translations into the other languages, HTML summaries) into a fresh
SQLite database for the 1–15 November 2026 period, then for each of the three exchanges
(Joensuu → ru, Petrozavodsk → fi, both → en, all with ``max_items`` = 200):

- ``build``: the first ``build_digest`` (select, rank, write every verdict);
- ``rebuild``: a second build that finds nothing changed (the idempotent path);
- ``render``: ``render_digest`` (Jinja2, babel, nh3, css-inline), the median of ``--repeat``;
- ``eml``: ``to_email`` + ``as_bytes()`` of the result, the median of ``--repeat``.

Prints one line per language and a JSON object with every figure (ms) on the last line.
Target on a 2-core machine: build + render of a 200-item digest well under a second.

    .venv/bin/python benchmarks/digest.py --scale [--sizes 200,20000] [--repeat 5]
        [--listing 1000,30000]

``--scale`` (issue 16): the cost of a digest must not grow with what it leaves out. For
each size it writes that many candidates of one region (ten sources, a story group for every
tenth item, nine in ten translated, one in seven an upcoming event) into a fresh SQLite
database and builds the ordinary digest (``max_items`` 20, ``max_per_source`` 5): ``build``
is the CPU time (``time.process_time``) of the first build, the median of ``--repeat`` (the
digest is deleted between runs), ``show_html`` that of ``digest show --format html`` (open
the digest, ``render_digest``). The last size is compared with the first: ``build_ratio``
(target ≤ 1.5). ``--listing`` runs ``newsexchange items --json --limit N`` in a subprocess
over that many items and prints its peak memory (``ru_maxrss``, MB) and CPU: constant memory
means the same peak for every N.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsexchange.config import load_config  # noqa: E402
from newsexchange.db import Database, Digest, Item, Source, StoryGroup, Translation  # noqa: E402
from newsexchange.digest import build_digest  # noqa: E402
from newsexchange.digest.render import render_digest, to_email  # noqa: E402

CONFIG = """\
timezone: Europe/Helsinki
database_url: sqlite:///bench.db
public_url: https://news.example.org
mail: {{backend: outbox, from: "Exchange <news@example.org>"}}
regions:
  joensuu:      {{name: Joensuu, language: fi, timezone: Europe/Helsinki}}
  petrozavodsk: {{name: Petrozavodsk, language: ru, timezone: Europe/Moscow}}
sources:
{sources}
exchanges:
  - {{id: to-ru, name: Новости Йоэнсуу, from: [joensuu], to: petrozavodsk, language: ru,
     editors: [e@example.org], max_items: {max_items}, max_per_source: 100}}
  - {{id: to-fi, name: Petroskoin uutiset, from: [petrozavodsk], to: joensuu, language: fi,
     editors: [e@example.org], max_items: {max_items}, max_per_source: 100}}
  - {{id: to-en, name: Border news, from: [joensuu, petrozavodsk], language: en,
     editors: [e@example.org], max_items: {max_items}, max_per_source: 100}}
"""

TEXT = {
    "fi": "Pohjois-Karjalan maakuntahallitus käsitteli {i}. kertaa Joensuun ja Petroskoin välistä yhteistyötä; äänestys päättyi äänin 7–4.",
    "ru": "Правительство Карелии в {i}-й раз обсудило сотрудничество Петрозаводска и Йоэнсуу; решение принято большинством голосов.",
    "en": "The regional council discussed Joensuu–Petrozavodsk cooperation for the {i}th time; the vote ended 7–4.",
}


def seed(db: Database, per_region: int) -> None:
    start = datetime(2026, 10, 31, 22, 0, tzinfo=UTC)
    with db.session() as s:
        for region in ("joensuu", "petrozavodsk"):
            for k in range(5):
                s.add(Source(id=f"{region}-{k}", config_url="u", url="u"))
        s.flush()
        groups = [StoryGroup(fingerprint=f"g{g}") for g in range(per_region // 10 + 1)]
        s.add_all(groups)
        s.flush()
        n = 0
        for region, lang in (("joensuu", "fi"), ("petrozavodsk", "ru")):
            for i in range(per_region):
                n += 1
                others = [x for x in ("fi", "ru", "en") if x != lang]
                item = Item(
                    source_id=f"{region}-{i % 5}",
                    identity=f"{region}-{i}",
                    link=f"https://{region}.example/news/{i}",
                    title=f"{TEXT[lang][:40]} #{i}",
                    summary_html=f"<p>{TEXT[lang].format(i=i)}</p><p><a href='https://x.example/{i}'>lisää</a></p>",
                    summary_text=TEXT[lang].format(i=i),
                    region=region,
                    category="events" if i % 7 == 0 else "news",
                    language=lang,
                    published_at=start + timedelta(minutes=97 * i),
                    event_start=start + timedelta(days=16 + i % 10, hours=16)
                    if i % 7 == 0
                    else None,
                    content_hash=str(n),
                    story_group_id=groups[i // 10].id if i % 10 == 0 and i else None,
                )
                for other in others:
                    item.translations.append(
                        Translation(
                            language=other,
                            title=f"{TEXT[other][:40]} #{i}",
                            summary_text=TEXT[other].format(i=i),
                            summary_html=f"<p>{TEXT[other].format(i=i)}</p>",
                            status="done",
                            provider="bench",
                        )
                    )
                s.add(item)


SCALE_CONFIG = """\
timezone: Europe/Helsinki
database_url: sqlite:///{db}
public_url: https://news.example.org
mail: {{backend: outbox, from: "Exchange <news@example.org>"}}
regions:
  joensuu:      {{name: Joensuu, language: fi, timezone: Europe/Helsinki}}
  petrozavodsk: {{name: Petrozavodsk, language: ru, timezone: Europe/Moscow}}
sources:
{sources}
exchanges:
  - {{id: to-ru, name: Новости Йоэнсуу, from: [joensuu], to: petrozavodsk, language: ru,
     editors: [e@example.org]}}
"""


def seed_scale(db: Database, n: int) -> None:
    """``n`` candidates of the to-ru digest of 1–15 November 2026, written with Core inserts."""
    from sqlalchemy import insert, select

    start = datetime(2026, 10, 31, 21, 0, tzinfo=UTC)
    span = 15 * 24 * 60 - 1
    with db.session() as s:
        s.execute(
            insert(Source),
            [{"id": f"joensuu-{k}", "config_url": "u", "url": "u"} for k in range(10)],
        )
        s.execute(insert(StoryGroup), [{"fingerprint": f"g{g}"} for g in range(n // 10 + 1)])
        groups = list(s.scalars(select(StoryGroup.id).order_by(StoryGroup.id)))
        rows = []
        for i in range(n):
            event = i % 7 == 0
            rows.append(
                {
                    "source_id": f"joensuu-{i % 10}",
                    "identity": f"i{i}",
                    "link": f"https://joensuu.example/news/{i}",
                    "title": f"{TEXT['fi'][:40]} #{i}",
                    "summary_html": f"<p>{TEXT['fi'].format(i=i)}</p>",
                    "summary_text": TEXT["fi"].format(i=i),
                    "region": "joensuu",
                    "category": "events" if event else "news",
                    "language": "fi",
                    "published_at": start + timedelta(minutes=(i * 7919) % span),
                    "event_start": start + timedelta(days=16 + i % 10, hours=16) if event else None,
                    "content_hash": str(i),
                    "story_group_id": groups[i // 10] if i % 10 == 3 else None,
                }
            )
        s.execute(insert(Item), rows)
        ids = list(s.scalars(select(Item.id).order_by(Item.id)))
        s.execute(
            insert(Translation),
            [
                {
                    "item_id": item_id,
                    "language": "ru",
                    "title": f"{TEXT['ru'][:40]} #{k}",
                    "summary_text": TEXT["ru"].format(i=k),
                    "summary_html": f"<p>{TEXT['ru'].format(i=k)}</p>",
                    "status": "done",
                    "provider": "bench",
                }
                for k, item_id in enumerate(ids)
                if k % 10 != 9
            ],
        )


def cpu_ms(t0: float) -> float:
    return round((time.process_time() - t0) * 1000, 1)


def scale(args: argparse.Namespace) -> int:
    from sqlalchemy import delete

    sizes = [int(x) for x in args.sizes.split(",")]
    figures: dict[str, Any] = {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cfg, db = _scale_db(Path(tmp), n)
            builds, shows = [], []
            rep = None
            for _ in range(args.repeat):
                with db.session() as s:
                    s.execute(delete(Digest))
                t0 = time.process_time()
                rep = build_digest(db, cfg, "to-ru", period_start=date(2026, 11, 1), now=NOW)
                builds.append(cpu_ms(t0))
            assert rep is not None
            for _ in range(args.repeat):
                t0 = time.process_time()
                with db.session() as s:
                    d = s.get(Digest, rep.id)
                    assert d is not None
                    html = render_digest(s, cfg, d).html
                shows.append(cpu_ms(t0))
            figures[str(n)] = {
                "candidates": n,
                "items": rep.item_count,
                "left_out": getattr(rep, "left_out_count", len(rep.left_out)),
                "build_ms": statistics.median(builds),
                "show_html_ms": statistics.median(shows),
                "html_kb": round(len(html.encode()) / 1024, 1),
            }
            db.dispose()
        f = figures[str(n)]
        print(
            f"{n:>6} candidates: {f['items']} in, {f['left_out']} left out  build "
            f"{f['build_ms']} ms CPU  show --format html {f['show_html_ms']} ms CPU"
        )
    first, last = figures[str(sizes[0])], figures[str(sizes[-1])]
    figures["build_ratio"] = round(last["build_ms"] / first["build_ms"], 2)
    figures["show_ratio"] = round(last["show_html_ms"] / first["show_html_ms"], 2)
    print(
        f"build at {sizes[-1]} / at {sizes[0]}: {figures['build_ratio']}×  (target ≤ 1.5); "
        f"show: {figures['show_ratio']}×"
    )
    if args.listing:
        figures["listing"] = {}
        for n in [int(x) for x in args.listing.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                cfg, db = _scale_db(Path(tmp), n)
                db.dispose()
                figures["listing"][str(n)] = got = _listing(Path(tmp), n)
            print(
                f"items --json --limit {n}: peak {got['maxrss_mb']} MB, "
                f"{got['cpu_s']} s CPU, {got['bytes']} bytes"
            )
    print(json.dumps(figures))
    return 0


NOW = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)


def _scale_db(tmp: Path, n: int) -> tuple[Any, Database]:
    sources = "\n".join(
        f"  - {{id: joensuu-{k}, region: joensuu, language: fi, url: 'https://j.example/{k}'}}"
        for k in range(10)
    )
    path = tmp / "feeds.yaml"
    path.write_text(SCALE_CONFIG.format(db=tmp / "bench.db", sources=sources), encoding="utf-8")
    cfg = load_config(path, env={"NEWSEXCHANGE_SECRET_KEY": "bench"})
    db = Database(f"sqlite:///{tmp}/bench.db")
    seed_scale(db, n)
    if COVERING:
        from sqlalchemy import text

        with db.session() as s:
            for ddl in COVERING:
                s.execute(text(ddl))
    return cfg, db


COVERING: list[str] = []
COVERING_DDL = [
    "CREATE INDEX ix_bench_items_cover ON items (region, published_at, event_start, "
    "cancelled_at, source_id, category, story_group_id, language)",
    "CREATE INDEX ix_bench_translations_cover ON translations (item_id, language, status, title)",
]


def _listing(tmp: Path, n: int) -> dict[str, float]:
    """``newsexchange items --json --limit n`` in a fresh process: its peak memory and CPU."""
    import subprocess

    probe = (
        "import resource, subprocess, sys; "
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, check=True); "
        "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(r.ru_maxrss, r.ru_utime + r.ru_stime, len(p.stdout))"
    )
    cmd = [sys.executable, "-m", "newsexchange", "items", "--json", "--limit", str(n)]
    cmd += ["--config", str(tmp / "feeds.yaml")]
    env = {**os.environ, "NEWSEXCHANGE_SECRET_KEY": "bench", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return {
        "maxrss_mb": round(int(out[0]) / 1024, 1),
        "cpu_s": round(float(out[1]), 2),
        "bytes": int(out[2]),
    }


def ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=250, help="stored items per region")
    ap.add_argument("--max-items", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scale", action="store_true", help="build and show cost against size")
    ap.add_argument("--sizes", default="200,20000", help="candidates per --scale run")
    ap.add_argument("--listing", default="", help="items --json over these many items")
    ap.add_argument(
        "--covering-index",
        action="store_true",
        help="--scale with indexes holding every column the ranking reads (not in the schema: "
        "shows what a migration adding them would give)",
    )
    args = ap.parse_args()
    if args.covering_index:
        COVERING.extend(COVERING_DDL)
    if args.scale:
        return scale(args)

    with tempfile.TemporaryDirectory() as tmp:
        sources = "\n".join(
            f"  - {{id: {r}-{k}, region: {r}, language: {lang}, url: 'https://{r}.example/{k}'}}"
            for r, lang in (("joensuu", "fi"), ("petrozavodsk", "ru"))
            for k in range(5)
        )
        path = Path(tmp) / "feeds.yaml"
        path.write_text(
            textwrap.dedent(CONFIG).format(sources=sources, max_items=args.max_items),
            encoding="utf-8",
        )
        cfg = load_config(path, env={"NEWSEXCHANGE_SECRET_KEY": "bench"})
        db = Database(f"sqlite:///{tmp}/bench.db")
        seed(db, args.items)
        now = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
        figures: dict[str, dict[str, float]] = {}
        for ex, lang in (("to-ru", "ru"), ("to-fi", "fi"), ("to-en", "en")):
            t0 = time.perf_counter()
            rep = build_digest(db, cfg, ex, period_start=date(2026, 11, 1), now=now)
            build_ms = ms(t0)
            t0 = time.perf_counter()
            again = build_digest(db, cfg, ex, period_start=date(2026, 11, 1), now=now)
            rebuild_ms = ms(t0)
            assert again.id == rep.id and not again.changed
            renders, emls = [], []
            html_kb = 0.0
            with db.session() as s:
                d = s.get(Digest, rep.id)
                assert d is not None
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    rendered = render_digest(s, cfg, d)
                    renders.append(ms(t0))
                    t0 = time.perf_counter()
                    raw = to_email(rendered, config=cfg, to="j@example.org", now=now).as_bytes()
                    emls.append(ms(t0))
                html_kb = round(len(rendered.html.encode()) / 1024, 1)
            figures[lang] = {
                "items": rep.item_count,
                "left_out": len(rep.left_out),
                "build_ms": build_ms,
                "rebuild_ms": rebuild_ms,
                "render_ms": statistics.median(renders),
                "eml_ms": statistics.median(emls),
                "html_kb": html_kb,
                "eml_kb": round(len(raw) / 1024, 1),
            }
            f = figures[lang]
            print(
                f"{lang}: {f['items']:.0f} items ({f['left_out']:.0f} left out)  build "
                f"{f['build_ms']} ms  rebuild {f['rebuild_ms']} ms  render {f['render_ms']} ms  "
                f"eml {f['eml_ms']} ms  html {f['html_kb']} KiB"
            )
        db.dispose()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
