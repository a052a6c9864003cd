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
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

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
                    event_start=start + timedelta(days=16 + i % 10, hours=16) if i % 7 == 0 else None,
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


def ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=250, help="stored items per region")
    ap.add_argument("--max-items", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

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
