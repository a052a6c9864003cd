"""How long parsing + cleaning takes per feed: feedparser vs the fast path vs with cleaning.

    .venv/bin/python benchmarks/parse.py [--feeds 200] [--corpus ../shared/corpus/feedparser]

Generates 30-item Finnish and Russian feeds (RSS 2.0 in UTF-8 and windows-1251, Atom 1.0),
shaped like the region's real ones (HTML descriptions with links carrying utm_ parameters,
images, a tracking pixel), then prints milliseconds per feed for:

* ``feedparser``      feedparser.parse as is (its own sanitizer on), the reference;
* ``fastfeedparser``  fastfeedparser.parse as is (no cleaning), for comparison;
* ``lxml parse``      lxml's strict parse alone (the floor of the fast path);
* ``fast path``       parse_feed, fast path, everything included (cleaning, dates, URLs);
* ``fallback path``   parse_feed forced through feedparser, everything included;
* ``cleaning only``   sanitize_html + to_text over the same summaries;
* per item, what storage adds: detect_language and fingerprint.

Each call is timed five times and the best kept: the machine is shared, and interference
only ever adds time.

and, with the corpus, the time for every corpus file and which parser took each.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsexchange.errors import FetchError  # noqa: E402
from newsexchange.ingest import parse as parse_mod  # noqa: E402
from newsexchange.ingest.clean import sanitize_html, text_of_safe_html  # noqa: E402
from newsexchange.ingest.langdetect import detect_language  # noqa: E402
from newsexchange.ingest.parse import parse_feed  # noqa: E402
from newsexchange.ingest.stories import fingerprint  # noqa: E402

FI_WORDS = str.split(
    "Joensuu kaupunki valtuusto hyväksyi talousarvion maanantaina Pohjois-Karjala "
    "keskussairaala päivystys ruuhkautui viikonloppuna Ilomantsi Lieksa Kontiolahti "
    "yliopisto opiskelijat rajanylityspaikka Niirala liikenne tie rautatie juna bussi "
    "tapahtuma konsertti kirjasto koulu päiväkoti hanke rahoitus työpaikat yritys "
    "metsä järvi Pielinen Koli matkailu kesä talvi lumi jää hiihto kilpailu voitto"
)
RU_WORDS = str.split(
    "Петрозаводск Карелия глава республики правительство совет депутатов бюджет "
    "утвердили понедельник больница поликлиника дороги ремонт мост Онего Онежское озеро "
    "Кондопога Сортавала Костомукша университет студенты граница Вяртсиля поезд автобус "
    "концерт филармония театр музей выставка школа детский сад проект финансирование "
    "предприятие лес зима снег лёд лыжи соревнования победа жители города района"
)


def _sentence(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."


def _item_html(rng: random.Random, words: list[str], host: str, i: int) -> str:
    paras = [_sentence(rng, words, rng.randint(10, 22)) for _ in range(rng.randint(2, 4))]
    link = f'<a href="/news/{i}/more?utm_source=rss&amp;utm_medium=feed">{rng.choice(words)}</a>'
    img = f'<img src="https://{host}/img/{i}.jpg" alt="{rng.choice(words)}" width="640">'
    pixel = f'<img src="https://{host}/pixel.gif?i={i}" width="1" height="1">'
    return f"<p>{img}{paras[0]} {link}</p>" + "".join(f"<p>{p}</p>" for p in paras[1:]) + pixel


def make_feed(n: int, *, lang: str, kind: str, encoding: str, seed: int) -> bytes:
    rng = random.Random(seed)
    words = FI_WORDS if lang == "fi" else RU_WORDS
    host = f"news{seed}.example.{'fi' if lang == 'fi' else 'ru'}"
    base = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    items = []
    for i in range(n):
        title = _sentence(rng, words, rng.randint(5, 10))[:-1]
        when = base - timedelta(minutes=37 * i)
        html = _item_html(rng, words, host, i)
        url = f"https://{host}/news/{seed}-{i}?utm_source=rss"
        if kind == "rss":
            items.append(
                f"<item><title>{escape(title)}</title><link>{escape(url)}</link>"
                f'<guid isPermaLink="false">{host}-{i}</guid>'
                f"<pubDate>{format_datetime(when.astimezone(timezone(timedelta(hours=3))))}</pubDate>"
                f"<description><![CDATA[{html}]]></description>"
                f"<category>{rng.choice(words)}</category></item>"
            )
        else:
            items.append(
                f"<entry><title>{escape(title)}</title>"
                f'<link rel="alternate" href="{escape(url)}"/><id>tag:{host},2026:{i}</id>'
                f"<published>{when.isoformat()}</published><updated>{when.isoformat()}</updated>"
                f"<author><name>{rng.choice(words)}</name></author>"
                f'<summary type="html">{escape(html)}</summary></entry>'
            )
    title = f"{host} news"
    if kind == "rss":
        doc = (
            f'<?xml version="1.0" encoding="{encoding}"?>\n<rss version="2.0"><channel>'
            f"<title>{title}</title><link>https://{host}/</link><language>{lang}</language>"
            + "".join(items)
            + "</channel></rss>"
        )
    else:
        doc = (
            f'<?xml version="1.0" encoding="{encoding}"?>\n'
            f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{lang}"><title>{title}</title>'
            f'<link href="https://{host}/"/><id>https://{host}/</id>'
            f"<updated>{base.isoformat()}</updated>" + "".join(items) + "</feed>"
        )
    return doc.encode("cp1251" if encoding == "windows-1251" else encoding)


def generated(count: int) -> list[tuple[bytes, str]]:
    shapes = [
        ("fi", "rss", "utf-8"),
        ("ru", "rss", "windows-1251"),
        ("fi", "atom", "utf-8"),
        ("ru", "rss", "utf-8"),
    ]
    feeds = []
    for i in range(count):
        lang, kind, enc = shapes[i % len(shapes)]
        ct = "application/rss+xml" if kind == "rss" else "application/atom+xml"
        feeds.append((make_feed(30, lang=lang, kind=kind, encoding=enc, seed=i), ct))
    return feeds


def per_feed(
    label: str, feeds: list[tuple[bytes, str]], fn: Callable[[bytes, str], object]
) -> float:
    for body, ct in feeds[:5]:  # warm up (imports, caches)
        fn(body, ct)
    # Each feed's best of five runs: the machine is shared, and interference only ever adds
    # time, so the minimum is the parser's own cost.
    total = 0.0
    for body, ct in feeds:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            fn(body, ct)
            best = min(best, time.perf_counter() - start)
        total += best
    ms = total / len(feeds) * 1000
    print(f"  {label:<44} {ms:8.3f} ms/feed   ({1000 / ms:7.0f} feeds/s on one core)")
    return ms


def per_item(label: str, entries: list[Any], fn: Callable[[Any], object]) -> None:
    total = 0.0
    for e in entries:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            fn(e)
            best = min(best, time.perf_counter() - start)
        total += best
    us = total / len(entries) * 1e6
    print(f"  {label:<44} {us:8.1f} µs/item  ({us * 30 / 1000:.2f} ms per 30-item feed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--feeds", type=int, default=200)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared/corpus/feedparser")
    args = ap.parse_args()

    import fastfeedparser
    import feedparser
    from lxml import etree

    feeds = generated(args.feeds)
    size = statistics.mean(len(b) for b, _ in feeds) / 1024
    print(f"{len(feeds)} generated feeds, 30 items each, {size:.0f} KiB on average")
    url = "https://example.org/feed"
    per_feed("feedparser.parse (reference, as is)", feeds,
             lambda b, ct: feedparser.parse(b, response_headers={"content-type": ct}))  # fmt: skip
    per_feed(
        "fastfeedparser.parse (as is, no cleaning)", feeds, lambda b, ct: fastfeedparser.parse(b)
    )
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    per_feed("lxml strict parse only", feeds, lambda b, ct: etree.fromstring(b, parser))

    parse_mod.FORCE_PARSER = "fast"
    fast_ms = per_feed("parse_feed, fast path (all included)", feeds,
                       lambda b, ct: parse_feed(b, url=url, content_type=ct))  # fmt: skip
    parse_mod.FORCE_PARSER = "feedparser"
    per_feed("parse_feed, feedparser path (all included)", feeds,
             lambda b, ct: parse_feed(b, url=url, content_type=ct))  # fmt: skip
    parse_mod.FORCE_PARSER = None

    # The summaries of each RSS feed, as the parser hands them to the cleaner.
    summaries = {
        b: re.findall(
            r"<!\[CDATA\[(.*?)\]\]>", b.decode("cp1251" if b"1251" in b[:60] else "utf-8"), re.S
        )
        for b, _ in feeds
        if b"<rss" in b[:100]
    }
    rss_feeds = [f for f in feeds if f[0] in summaries]

    def clean_only(b: bytes, ct: str) -> None:
        for s in summaries[b]:
            text_of_safe_html(sanitize_html(s, "https://example.org/feed"), 500)

    per_feed("cleaning only (sanitize + text) x30", rss_feeds, clean_only)

    entries = [e for b, ct in feeds[:40] for e in parse_feed(b, url=url, content_type=ct).entries]
    detect_language("Lämmin kesä jatkuu Pohjois-Karjalassa ensi viikolla")  # loads the model
    per_item(
        "detect_language per item",
        entries,
        lambda e: detect_language(f"{e.title}. {e.summary_text}"),
    )
    per_item("fingerprint per item", entries, lambda e: fingerprint(e.title, e.summary_text))
    print(f"fast path vs feedparser.parse: {fast_ms:.2f} ms vs reference; budget 5 ms/feed")

    if args.corpus.is_dir():
        files = sorted(p for p in args.corpus.rglob("*") if p.is_file() and p.name != "LICENSE")
        bodies = []
        for p in files:
            data = p.read_bytes()
            head = data[:3000].decode("latin-1")
            hdrs = {
                k.lower(): v.strip()
                for k, v in re.findall(r"^Header:\s*([\w-]+):(.*)$", head, re.M)
            }
            bodies.append((data, hdrs.get("content-type"), hdrs.get("content-location", url)))
        used: Counter[str] = Counter()
        start = time.perf_counter()
        for data, ct, loc in bodies:
            try:
                used[parse_feed(data, url=loc, content_type=ct).parser] += 1
            except FetchError:
                used["FetchError"] += 1
        total = time.perf_counter() - start
        print(
            f"corpus: {len(bodies)} files in {total:.2f} s ({total / len(bodies) * 1000:.2f} ms/file); "
            + ", ".join(f"{k}: {v}" for k, v in used.most_common())
        )
    else:
        print(f"corpus not found at {args.corpus}; skipped")


if __name__ == "__main__":
    main()
