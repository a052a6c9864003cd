"""How much CPU parsing, cleaning and the per-item stages take, each next to its floor.

    .venv/bin/python benchmarks/parse.py [--feeds 200] [--corpus ../shared/corpus/feedparser]
                                         [--no-peers]

Generates 30-item Finnish and Russian feeds (RSS 2.0 in UTF-8 and windows-1251, Atom 1.0),
shaped like the region's real ones (HTML descriptions with links carrying utm_ parameters,
images, a tracking pixel), then prints CPU time (``time.process_time``: the machine is
shared, and CPU time is what another process's load disturbs least) for:

* the peers, as is: ``feedparser.parse`` (the reference, its sanitizer on) and
  ``fastfeedparser.parse`` (no cleaning); ``--no-peers`` skips them;
* per feed, the fast path's stages beside their floors: lxml's strict parse alone, the
  charset decision, extraction (XML tree → raw entries), the entry builder (cleaning,
  links, dates) with nh3's own ``clean`` over the same summaries, scrub_feed, and
  parse_feed in all (the feedparser path too, for comparison);
* per item, what storing adds: detect_language next to the model's own ``classify`` on the
  items that need the model (Russian is settled by its script), and fingerprint;
* the language model's memory: peak RSS added by loading it, our loader against
  py3langid's own (each in a fresh process).

Each call is timed five times and the best kept: interference only ever adds time. Then,
with the corpus, the time for every corpus file and which parser took each.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import subprocess
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
from newsexchange.ingest import langdetect  # noqa: E402
from newsexchange.ingest import parse as parse_mod  # noqa: E402
from newsexchange.ingest.charset import decide_charset  # noqa: E402
from newsexchange.ingest.clean import _cleaner, sanitize_html, scrub_feed  # noqa: E402
from newsexchange.ingest.langdetect import detect_language  # noqa: E402
from newsexchange.ingest.parse import parse_feed  # noqa: E402
from newsexchange.ingest.parsers import fast as fast_mod  # noqa: E402
from newsexchange.ingest.parsers.entry import RawEntry, _bounded, build_entry  # noqa: E402
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


def _best(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def per_feed(label: str, feeds: list[Any], fn: Callable[..., object], floor: float = 0.0) -> float:
    """Milliseconds of CPU per feed, ``fn(*feed)`` for each; with ``floor``, the ratio."""
    for feed in feeds[:5]:  # warm up (imports, caches)
        fn(*feed)
    ms = sum(_best(lambda f=f: fn(*f)) for f in feeds) / len(feeds) * 1000
    ratio = f"  {ms / floor:5.1f}x its floor" if floor else ""
    print(f"  {label:<46} {ms:8.3f} ms/feed  ({1000 / ms:6.0f} feeds/s){ratio}")
    return ms


def per_item(label: str, items: list[Any], fn: Callable[..., object], floor: float = 0.0) -> float:
    """Microseconds of CPU per item, ``fn(*item)`` for each; with ``floor``, the ratio."""
    for item in items[:20]:
        fn(*item)
    us = sum(_best(lambda i=i: fn(*i)) for i in items) / len(items) * 1e6
    ratio = f"  {us / floor:5.1f}x its floor" if floor else ""
    print(f"  {label:<46} {us:8.1f} µs/item  ({us * 30 / 1000:5.2f} ms per 30 items){ratio}")
    return us


_MODEL_PEAK = """
import re, sys
sys.path.insert(0, {root!r})
from py3langid.langid import MODEL_FILE, LanguageIdentifier
from newsexchange.ingest.langdetect import LANGUAGES, _identifier

def peak():  # VmHWM starts afresh at exec (ru_maxrss would carry the parent's peak over)
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s+(\\d+)", f.read()).group(1)) / 1024

before = peak()
if {own}:
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(LANGUAGES))
else:
    _identifier()
print(before, peak())
"""


def model_memory() -> None:
    """Peak RSS that loading the language model adds, in a fresh process each (its imports
    already done, so the figure is the model's alone)."""
    for label, own in (("ours (restricted while read)", False), ("py3langid's own loader", True)):
        code = _MODEL_PEAK.format(root=str(ROOT), own=own)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        before, after = map(float, out.stdout.split())
        print(
            f"  language model, {label:<30} +{after - before:5.1f} MB peak RSS"
            f" (process with its imports: {before:.0f} MB)"
        )


def raw_entries(body: bytes, url: str) -> list[RawEntry]:
    """What the fast path's extractor hands the entry builder for one feed."""
    captured: list[RawEntry] = []
    real = fast_mod.build_entry  # type: ignore[attr-defined]
    fast_mod.build_entry = lambda r, **kw: captured.append(r)  # type: ignore[attr-defined]
    try:
        fast_mod.parse_fast(body, url, 500)
    finally:
        fast_mod.build_entry = real  # type: ignore[attr-defined]
    return captured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--feeds", type=int, default=200)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared/corpus/feedparser")
    ap.add_argument("--no-peers", action="store_true", help="skip feedparser/fastfeedparser")
    args = ap.parse_args()

    from lxml import etree

    feeds = generated(args.feeds)
    size = statistics.mean(len(b) for b, _ in feeds) / 1024
    print(f"{len(feeds)} generated feeds, 30 items each, {size:.0f} KiB on average; CPU time")
    url = "https://example.org/feed"
    if not args.no_peers:
        import fastfeedparser
        import feedparser

        print("peers, as is:")
        per_feed("feedparser.parse (reference)", feeds,
                 lambda b, ct: feedparser.parse(b, response_headers={"content-type": ct}))  # fmt: skip
        per_feed("fastfeedparser.parse (no cleaning)", feeds, lambda b, ct: fastfeedparser.parse(b))

    # What each stage gets: the settled UTF-8 bodies, the raw entries, the summaries.
    settled = [(decide_charset(b, ct).body,) for b, ct in feeds]
    raws = [(raw_entries(body, url),) for (body,) in settled]
    summaries = [([_bounded(r.summary or r.content or "") for r in rs],) for (rs,) in raws]
    parsed = [(parse_feed(b, url=url, content_type=ct),) for b, ct in feeds]

    print("fast path, per feed (stage, then its floor):")
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    lxml_ms = per_feed("lxml strict parse alone [floor]", settled,
                       lambda b: etree.fromstring(b, parser))  # fmt: skip
    per_feed("XML checks + lxml parse (_xml_root)", settled, fast_mod._xml_root, lxml_ms)
    per_feed("charset decision (+ re-encoding to UTF-8)", feeds, decide_charset)
    parse_fast_ms = per_feed("parse_fast (XML → entries, building included)", settled,
                             lambda b: fast_mod.parse_fast(b, url, 500))  # fmt: skip
    nh3_ms = per_feed("nh3 clean alone over the summaries [floor]", summaries,
                      lambda ss: [_cleaner(url).clean(s) for s in ss])  # fmt: skip
    per_feed("sanitize_html over the summaries", summaries,
             lambda ss: [sanitize_html(s, url) for s in ss], nh3_ms)  # fmt: skip
    build_ms = per_feed("build_entry x30 (cleaning, links, text, dates)", raws,
                        lambda rs: [build_entry(r, base=url, summary_chars=500) for r in rs],
                        nh3_ms)  # fmt: skip
    per_feed("scrub_feed (characters never stored)", parsed, scrub_feed)
    print(f"  {'= extraction (parse_fast less building)':<46} {parse_fast_ms - build_ms:8.3f} ms/feed"
          f"  {(parse_fast_ms - build_ms) / lxml_ms:5.1f}x lxml alone")  # fmt: skip
    parse_mod.FORCE_PARSER = "fast"
    fast_ms = per_feed("parse_feed, fast path (all included)", feeds,
                       lambda b, ct: parse_feed(b, url=url, content_type=ct),
                       lxml_ms + nh3_ms)  # fmt: skip
    parse_mod.FORCE_PARSER = "feedparser"
    per_feed("parse_feed, feedparser path (all included)", feeds[:40],
             lambda b, ct: parse_feed(b, url=url, content_type=ct))  # fmt: skip
    parse_mod.FORCE_PARSER = None

    print("per item, what storing adds:")
    entries = [e for (f,) in parsed[:40] for e in f.entries]
    texts = [(f"{e.title}. {e.summary_text}",) for e in entries]
    ident = langdetect._identifier()
    modelled = [
        (t,)
        for (t,) in texts
        if langdetect._CYRILLIC_LETTER.search(t[: langdetect.MAX_CHARS]) is None
    ]
    model_us = per_item("the model's classify alone [floor]", modelled,
                        lambda t: ident.classify(t[: langdetect.MAX_CHARS]))  # fmt: skip
    per_item("detect_language, items the model reads", modelled, detect_language, model_us)
    per_item("detect_language, all items (ru by script)", texts, detect_language)
    per_item("fingerprint", [(e.title, e.summary_text) for e in entries], fingerprint)
    model_memory()
    print(
        f"parse_feed fast path {fast_ms:.2f} ms/feed; floors lxml {lxml_ms:.2f} + nh3 {nh3_ms:.2f}"
    )

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
