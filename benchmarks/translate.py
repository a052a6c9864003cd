"""Translation throughput: N items (30 % repeated text) through the real ``run_translate``.

    .venv/bin/python benchmarks/translate.py [--items 10000] [--repeat 0.3] [--db sqlite|URL]

What it does:

1. Starts a LibreTranslate-speaking server on loopback that answers at once with the tests'
   fake translation (each word reversed), so the provider costs only its HTTP round trip. It
   is a leaner server than tests/servers.py (buffered writes, TCP_NODELAY), whose separate
   header and body writes cost ~40 ms of delayed ACK per request.
2. Stores N items as ingestion would (80 % Finnish from Joensuu, 20 % Russian from
   Petrozavodsk; titles plus two-to-four-sentence HTML summaries with names from the
   glossary); a share ``--repeat`` of them repeat an earlier item's text exactly (wire stories
   picked up by several outlets), and every item shares some stock sentences ("Lue lisää
   verkkosivuilta.") with others.
3. Runs ``run_translate`` (each item into its exchange's language and English) and prints
   requests and characters sent, the memory hit rates, and items/s through the pipeline
   excluding the time spent waiting for the provider. Then runs it again: nothing new, so
   zero requests.

Target on a 2-core machine: ≥ 250 items/s excluding provider time (the exchange sees a few
hundred items a day; a backlog of 10,000 is under a minute of our own work), characters sent
well under the characters in the items, and zero requests on the second run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402

from newsexchange.config import load_config  # noqa: E402
from newsexchange.db import Database, Item, Source  # noqa: E402
from newsexchange.translate import run_translate  # noqa: E402
from tests.test_translate_support import fake_translate  # noqa: E402

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
_FI = (
    "kaupunki kunta tapahtuma näyttely konsertti kirjasto koulu silta tie raja yhteistyö "
    "hanke vierailu festivaali talvi kesä järvi metsä satama museo teatteri kilpailu "
    "hiihto urheilu tutkimus opiskelijat asukkaat yrittäjät matkailu liikenne budjetti "
    "päätös kokous valtuusto sopimus investointi tehdas työpaikat terveys palvelu"
)
FI_WORDS = _FI.split()
FI_NAMES = ["Joensuussa", "Petroskoissa", "Pohjois-Karjalan", "Kostamuksessa", "Sortavalassa"]
_RU = (
    "город район событие выставка концерт библиотека школа мост дорога граница "
    "сотрудничество проект визит фестиваль зима лето озеро лес порт музей театр конкурс "
    "лыжи спорт исследование студенты жители предприниматели туризм транспорт бюджет"
)
RU_WORDS = _RU.split()
RU_NAMES = ["Петрозаводске", "Карелии", "Йоэнсуу", "Костомукше", "Сортавале"]
FI_STOCK = ["Lue lisää verkkosivuilta.", "Tapahtuma on maksuton.", "Tervetuloa mukaan!"]
RU_STOCK = ["Подробнее на сайте.", "Вход свободный.", "Приглашаем всех желающих!"]


class InstantLibre:
    """POST /translate and GET /languages, answered at once; counts requests and characters."""

    def __init__(self) -> None:
        self.requests = 0
        self.chars = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # status, headers and body leave in one write
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, data: object) -> None:
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_GET(self) -> None:
                langs = ["fi", "ru", "en"]
                self._send([{"code": c, "targets": [t for t in langs if t != c]} for c in langs])

            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                q = req["q"] if isinstance(req["q"], list) else [req["q"]]
                outer.requests += 1
                outer.chars += sum(map(len, q))
                self._send({"translatedText": [fake_translate(t, req["target"]) for t in q]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sentence(rng: random.Random, words: list[str], names: list[str]) -> str:
    n = rng.randint(6, 14)
    parts = [rng.choice(words) for _ in range(n)]
    parts.insert(rng.randrange(len(parts)), rng.choice(names))
    return parts[0].capitalize() + " " + " ".join(parts[1:]) + "."


def make_items(n: int, repeat: float, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(n):
        ru = rng.random() < 0.2
        if rows and rng.random() < repeat:
            same = [r for r in rows[-2000:] if (r["language"] == "ru") == ru] or rows
            base = rng.choice(same)
            title, summary = base["title"], base["summary_html"]
        else:
            words, names = (RU_WORDS, RU_NAMES) if ru else (FI_WORDS, FI_NAMES)
            title = sentence(rng, words, names).rstrip(".")
            body = " ".join(sentence(rng, words, names) for _ in range(rng.randint(2, 4)))
            stock = rng.choice(RU_STOCK if ru else FI_STOCK)
            summary = f'<p>{body}</p><p><a href="https://example.org/{i}">{stock}</a></p>'
        text = str(summary).replace("<p>", " ").replace("</p>", " ")
        rows.append(
            {
                "source_id": "ru-src" if ru else "fi-src",
                "identity": f"item-{i}",
                "title": title,
                "summary_html": summary,
                "summary_text": " ".join(text.split()),
                "region": "petrozavodsk" if ru else "joensuu",
                "language": "ru" if ru else "fi",
                "detected_language": "ru" if ru else "fi",
                "published_at": NOW,
                "first_seen_at": NOW - timedelta(days=1),
                "updated_at": NOW - timedelta(days=1),
                "content_hash": f"h{i}",
            }
        )
    return rows


CONFIG = """\
timezone: Europe/Helsinki
database_url: {db}
regions:
  joensuu:      {{name: Joensuu, language: fi, timezone: Europe/Helsinki}}
  petrozavodsk: {{name: Petrozavodsk, language: ru, timezone: Europe/Moscow}}
translation:
  providers:
    - {{name: libre, url: {url}, max_chars: 2000}}
  glossary: {glossary}
exchanges:
  - {{id: j2p, from: [joensuu], language: ru, editors: [ed@example.org]}}
  - {{id: p2j, from: [petrozavodsk], language: fi, editors: [ed@example.org]}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--repeat", type=float, default=0.3)
    ap.add_argument("--db", default="sqlite", help="sqlite (a temp file) or a database URL")
    args = ap.parse_args()

    libre = InstantLibre()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/bench.db" if args.db == "sqlite" else args.db
        cfg_path = Path(tmp) / "feeds.yaml"
        cfg_path.write_text(
            CONFIG.format(db=db_url, url=libre.url, glossary=REPO / "glossary.yaml"),
            encoding="utf-8",
        )
        cfg = load_config(cfg_path, env={"NEWSEXCHANGE_SECRET_KEY": "bench"})
        db = Database(db_url)
        rows = make_items(args.items, args.repeat)
        with db.session() as s:
            s.add(Source(id="fi-src", config_url="https://fi.example/rss", url="x"))
            s.add(Source(id="ru-src", config_url="https://ru.example/rss", url="x"))
            s.flush()
            for i in range(0, len(rows), 1000):
                s.execute(insert(Item), rows[i : i + 1000])
        source_chars = sum(len(str(r["title"])) + len(str(r["summary_text"])) for r in rows)

        t0 = time.perf_counter()
        report = run_translate(db, cfg, now=NOW)
        wall = time.perf_counter() - t0
        own = wall - report.provider_seconds
        looked_up = report.segments_from_memory + report.segments_sent
        print(f"items: {args.items} ({args.repeat:.0%} repeated text), database: {args.db}")
        print(
            f"translations done: {report.translations_done} "
            f"(items × languages; {report.items_translated} items)"
        )
        print(f"requests: {report.requests}")
        print(
            f"characters sent: {report.characters_sent} "
            f"(the items hold {source_chars:,} characters × 2 target languages = "
            f"{2 * source_chars:,})"
        )
        print(
            f"memory: {report.fields_from_memory} whole fields and "
            f"{report.segments_from_memory} sentences served from memory; "
            f"{report.segments_sent} sentences sent; sentence hit rate "
            f"{report.segments_from_memory / max(1, looked_up):.1%}; "
            f"fields served whole: "
            f"{report.fields_from_memory / max(1, 2 * 2 * args.items):.1%}"
        )
        print(f"time: {wall:.2f} s wall, {report.provider_seconds:.2f} s waiting for the provider")
        print(f"throughput excluding provider time: {args.items / own:,.0f} items/s")

        t1 = time.perf_counter()
        again = run_translate(db, cfg, now=NOW)
        print(
            f"second run (nothing new): requests {again.requests or 0}, "
            f"{time.perf_counter() - t1:.2f} s to check {again.items_seen} items"
        )
        print(f"the server saw {libre.requests} requests, {libre.chars:,} characters")
        db.dispose()
    libre.stop()


if __name__ == "__main__":
    main()
