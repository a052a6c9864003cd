"""Ingest throughput: N generated feeds served on loopback, fetched by the real ``run_fetch``.

    .venv/bin/python benchmarks/ingest.py [--feeds 1000] [--reader /path/to/venv/bin/python]

What it does:

1. Starts a feed server in a *separate process* (a small asyncio HTTP/1.1 server with
   keep-alive, gzip and ETag/If-None-Match → 304), listening on several loopback addresses
   (127.0.0.1 … 127.0.0.N count as different hosts, so the per-host bound applies as it would
   in real life). It serves N feeds of 30 items each, half Finnish, half Russian, every
   fourth Russian one in windows-1251 (declared by the HTTP header only, or by the XML
   declaration only, alternately).
2. Measures the server's own ceiling (raw asyncio clients, 200s and 304s) so the figures
   below are known not to be the server's.
3. Runs ``run_fetch`` into a fresh SQLite database: the first fetch (everything new), then an
   unchanged refresh (every feed answers 304). Prints feeds/s for each, the CPU per feed
   (this process, plus the parse workers' with ``--parse-workers``; and the writer thread's
   alone: parsing, deciding, storing) and the peak memory (max RSS of this process and of
   the largest parse worker).
4. With ``--reader PYTHON`` (a Python that has lemon24/reader installed, in its own venv),
   runs reader's ``update_feeds`` on the same feeds (all of them unless ``--reader-feeds``)
   and prints its figures, CPU per feed included, and the ratio against ours.

Targets (issue 16): first fetch ≤ 5 ms CPU a feed and ≥ 7× less than reader's on the same
feeds in the same run, peak memory ≤ 120 MB at 1,000 feeds; unchanged refresh ≤ 1 ms CPU a
feed and ≥ 5× reader's feeds/s. CPU time, not wall-clock, is the figure to compare on a
shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ITEMS = 30
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

FI_SYLLABLES = [
    "ka",
    "ko",
    "ku",
    "la",
    "le",
    "lo",
    "mä",
    "nä",
    "pa",
    "pi",
    "ra",
    "ri",
    "sa",
    "si",
    "ta",
    "te",
    "to",
    "tu",
    "va",
    "vi",
    "jo",
    "ju",
    "hä",
    "kö",
    "yl",
    "it",
    "on",
    "en",
]
RU_SYLLABLES = [
    "ка",
    "ко",
    "ла",
    "ле",
    "ли",
    "мо",
    "на",
    "не",
    "но",
    "па",
    "по",
    "ра",
    "ре",
    "ро",
    "са",
    "се",
    "ст",
    "та",
    "то",
    "ва",
    "ве",
    "во",
    "го",
    "да",
    "до",
    "зи",
]
FI_COMMON = [
    "Joensuu",
    "kaupunki",
    "Pohjois-Karjala",
    "maakunta",
    "yliopisto",
    "kirjasto",
    "liikenne",
    "Petroskoi",
]
RU_COMMON = [
    "Петрозаводск",
    "Карелия",
    "республика",
    "город",
    "администрация",
    "университет",
    "Йоэнсуу",
]


def _vocabulary(syllables: list[str], common: list[str], seed: int) -> list[str]:
    """Several thousand made-up words, so generated stories are distinct (a small real
    vocabulary makes every random story look alike to the near-duplicate detector)."""
    rng = random.Random(seed)
    words = {"".join(rng.choice(syllables) for _ in range(rng.randint(3, 5))) for _ in range(6000)}
    return common + sorted(words)


FI_WORDS = _vocabulary(FI_SYLLABLES, FI_COMMON, 1)
RU_WORDS = _vocabulary(RU_SYLLABLES, RU_COMMON, 2)


# -- the feed server (runs in its own process) --------------------------------------------------


def make_feed(i: int) -> tuple[bytes, str]:
    """Feed number ``i``: (body, content type)."""
    rng = random.Random(i)
    russian = i % 2 == 1
    words = RU_WORDS if russian else FI_WORDS
    cp1251 = russian and i % 8 == 3
    encoding = "windows-1251" if cp1251 else "utf-8"
    header_only = cp1251 and i % 16 == 3  # charset in the HTTP header, none in the XML
    host = f"https://news{i}.example"
    out = [
        f'<?xml version="1.0" encoding="{encoding}"?>\n'
        if not header_only
        else "<?xml version='1.0'?>\n",
        f'<rss version="2.0"><channel><title>Feed {i}</title><link>{host}/</link>'
        f"<language>{'ru' if russian else 'fi'}</language>",
    ]
    for j in range(ITEMS):
        title = " ".join(rng.choice(words) for _ in range(rng.randint(6, 11))).capitalize()
        text = " ".join(rng.choice(words) for _ in range(rng.randint(30, 60)))
        body = (
            f'<p>{text[: len(text) // 2]}</p><p><a href="/news/{j}?utm_source=rss">'
            f'{text[len(text) // 2 :]}</a></p><img src="{host}/img/{j}.jpg" width="600">'
        )
        when = NOW - timedelta(minutes=rng.randint(5, 3 * 24 * 60))
        out.append(
            f"<item><title>{escape(title)}</title><link>{host}/news/{j}?utm_medium=feed</link>"
            f'<guid isPermaLink="false">{host}/id/{j}</guid>'
            f"<pubDate>{format_datetime(when)}</pubDate>"
            f"<description>{escape(body)}</description></item>"
        )
    out.append("</channel></rss>")
    data = "".join(out).encode(encoding)
    ctype = "application/rss+xml" + (f"; charset={encoding}" if header_only or i % 3 == 0 else "")
    return data, ctype


class _FeedProtocol(asyncio.Protocol):
    feeds: dict[bytes, tuple[bytes, bytes, bytes]] = {}  # path → (etag, plain, gzipped)
    ctypes: dict[bytes, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            path = parts[1] if len(parts) > 1 else b"/"
            inm = None
            gz = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"if-none-match":
                    inm = value.strip()
                elif name == b"accept-encoding":
                    gz = b"gzip" in value
            feed = self.feeds.get(path)
            if feed is None:
                self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                continue
            etag, plain, zipped = feed
            if inm == etag:
                self.transport.write(b"HTTP/1.1 304 Not Modified\r\nETag: " + etag + b"\r\n\r\n")
                continue
            body = zipped if gz else plain
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: "
                + self.ctypes[path]
                + b"\r\nETag: "
                + etag
                + (b"\r\nContent-Encoding: gzip" if gz else b"")
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )


def serve(n: int, hosts: int) -> None:
    """The server process: print the base URLs as JSON, then serve until stdin closes."""
    for i in range(n):
        data, ctype = make_feed(i)
        path = f"/feed/{i}.xml".encode()
        _FeedProtocol.feeds[path] = (f'"v{i}"'.encode(), data, gzip.compress(data, 6))
        _FeedProtocol.ctypes[path] = ctype.encode()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bases = []
        for h in range(hosts):
            addr = f"127.0.0.{h + 1}"
            server = await loop.create_server(_FeedProtocol, addr, 0, backlog=1024)
            bases.append(f"http://{addr}:{server.sockets[0].getsockname()[1]}")
        print(json.dumps(bases), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin

    asyncio.run(main())


# -- the measuring side ------------------------------------------------------------------------


def feed_urls(bases: list[str], n: int) -> list[str]:
    return [f"{bases[i % len(bases)]}/feed/{i}.xml" for i in range(n)]


async def _raw_load(urls: list[str], seconds: float, conns: int, conditional: bool) -> float:
    """Requests per second one event loop of raw sockets gets from the server."""
    from urllib.parse import urlsplit

    deadline = time.perf_counter() + seconds
    count = 0

    async def client(k: int) -> None:
        nonlocal count
        u = urlsplit(urls[k % len(urls)])
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        i = k
        while time.perf_counter() < deadline:
            path = urlsplit(urls[i % len(urls)]).path
            etag = f'"v{path.rsplit("/", 1)[-1].split(".")[0]}"'
            req = f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
            if conditional:
                req += f"If-None-Match: {etag}\r\n"
            writer.write((req + "\r\n").encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            count += 1
            i += conns
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(conns)))
    return count / (time.perf_counter() - started)


async def _httpx_floor(urls: list[str], per_host: int, concurrency: int) -> tuple[float, float]:
    """Conditional GETs (all 304) through bare httpx clients, one per host as the fetcher
    uses them: (requests/s, ms of CPU per request). The floor under the refresh figure."""
    import ssl

    import certifi
    import httpx

    context = ssl.create_default_context(cafile=certifi.where())  # shared, as in the fetcher
    clients: dict[str, httpx.AsyncClient] = {}
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, url: str) -> None:
        host = url.split("/")[2]
        client = clients.get(host)
        if client is None:
            limits = httpx.Limits(max_connections=per_host)
            client = clients[host] = httpx.AsyncClient(limits=limits, verify=context)
        async with sem:
            r = await client.get(url, headers={"If-None-Match": f'"v{i}"'})
            assert r.status_code == 304, r.status_code

    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    for client in clients.values():
        await client.aclose()
    return len(urls) / wall, cpu / len(urls) * 1000


def write_config(folder: Path, urls: list[str], db_path: Path) -> Path:
    lines = [
        "timezone: Europe/Helsinki",
        f"database_url: sqlite:///{db_path}",
        "regions:",
        "  joensuu: {name: Joensuu, language: fi, timezone: Europe/Helsinki}",
        "  petrozavodsk: {name: Petrozavodsk, language: ru, timezone: Europe/Moscow}",
        "sources:",
    ]
    for i, url in enumerate(urls):
        region, lang = ("petrozavodsk", "ru") if i % 2 else ("joensuu", "fi")
        lines.append(f'  - {{id: feed-{i}, region: {region}, language: {lang}, url: "{url}"}}')
    path = folder / "feeds.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


READER_SCRIPT = r"""
import json, sys, time
from reader import make_reader
urls = json.loads(sys.stdin.read())
r = make_reader(sys.argv[1])
for u in urls:
    r.add_feed(u)
t, c = time.perf_counter(), time.process_time()
r.update_feeds(workers=int(sys.argv[2]))
first, first_cpu = time.perf_counter() - t, time.process_time() - c
n = r.get_entry_counts().total
t, c = time.perf_counter(), time.process_time()
r.update_feeds(workers=int(sys.argv[2]), scheduled=False)
again, again_cpu = time.perf_counter() - t, time.process_time() - c
# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's (this benchmark's) RSS.
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"first": first, "refresh": again, "entries": n, "first_cpu": first_cpu,
                  "refresh_cpu": again_cpu, "rss_mb": rss}))
"""


def run_reader(python: str, urls: list[str], workers: int) -> dict[str, float] | str:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [python, "-c", READER_SCRIPT, f"{tmp}/reader.sqlite", str(workers)],
            input=json.dumps(urls),
            capture_output=True,
            text=True,
            timeout=1800,
        )
    if proc.returncode != 0:
        return f"reader failed: {proc.stderr.strip().splitlines()[-1:]}"
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


class _WriterCPU:
    """CPU seconds spent in ``Writer.write`` (the writer thread: parsing unless a worker
    did, deciding, storing), by ``time.thread_time``."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextlib.contextmanager
    def run(self) -> Iterator[None]:
        from newsexchange.ingest.writer import Writer

        original = Writer.write
        outer = self

        def write(self_: Any, batch: Any) -> Any:
            c = time.thread_time()
            try:
                return original(self_, batch)
            finally:
                outer.seconds += time.thread_time() - c

        Writer.write = write  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            Writer.write = original  # type: ignore[method-assign]


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM, Linux) in MB; else ru_maxrss."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _ChildPeaks:
    """The peak RSS (VmHWM) of this process's children but ``skip`` (the feed server),
    sampled from /proc every 0.2 s while running: a child's own ru_maxrss is no use, it
    starts at the parent's RSS (fork, then exec)."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _ChildPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(OSError):
                pids = {
                    int(pid)
                    for tid in os.listdir("/proc/self/task")
                    for pid in Path(f"/proc/self/task/{tid}/children").read_text().split()
                }
                for pid in pids - {self.skip}:
                    with contextlib.suppress(OSError, StopIteration, ValueError):
                        status = Path(f"/proc/{pid}/status").read_text().splitlines()
                        hwm = next(line for line in status if line.startswith("VmHWM:"))
                        mb = int(hwm.split()[1]) / 1024
                        self.peaks[pid] = max(self.peaks.get(pid, 0.0), mb)


def _children_cpu() -> float:
    """CPU seconds of the children that have exited (the parse workers, once a run ends)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class _Profiles:
    """cProfile the event-loop thread and the writer thread separately (cProfile only sees
    the thread it was enabled in)."""

    def __init__(self, prefix: str | None) -> None:
        self.prefix = prefix

    @contextlib.contextmanager
    def run(self, name: str) -> Iterator[None]:
        if not self.prefix:
            yield
            return
        import cProfile

        from newsexchange.ingest.writer import Writer

        loop_prof, writer_prof = cProfile.Profile(), cProfile.Profile()
        original = Writer.write

        def write(self_: Any, batch: Any) -> Any:
            writer_prof.enable()
            try:
                return original(self_, batch)
            finally:
                writer_prof.disable()

        Writer.write = write  # type: ignore[method-assign,assignment]
        loop_prof.enable()
        try:
            yield
        finally:
            loop_prof.disable()
            Writer.write = original  # type: ignore[method-assign]
            loop_prof.dump_stats(f"{self.prefix}.{name}.loop.prof")
            writer_prof.dump_stats(f"{self.prefix}.{name}.writer.prof")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feeds", type=int, default=1000)
    ap.add_argument("--hosts", type=int, default=25, help="distinct loopback hosts serving them")
    ap.add_argument(
        "--parse-workers",
        type=int,
        default=0,
        metavar="N",
        help="fetch.parse_workers for the run (default 0: parse in the fetching process)",
    )
    ap.add_argument("--reader", metavar="PYTHON", help="a Python with lemon24/reader installed")
    ap.add_argument(
        "--reader-feeds", type=int, default=0, help="feeds for reader (default: all of them)"
    )
    ap.add_argument("--reader-workers", type=int, default=16)
    ap.add_argument(
        "--profile",
        metavar="PREFIX",
        help="cProfile both runs: PREFIX.{first,refresh}.{loop,writer}.prof",
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.feeds, args.hosts)
        return 0

    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--feeds",
            str(args.feeds),
            "--hosts",
            str(args.hosts),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        bases = json.loads(server.stdout.readline())
        urls = feed_urls(bases, args.feeds)
        ceiling_200 = asyncio.run(_raw_load(urls, 1.5, 50, conditional=False))
        ceiling_304 = asyncio.run(_raw_load(urls, 1.5, 50, conditional=True))
        print(
            f"server ceiling (raw asyncio client, 50 connections): {ceiling_200:,.0f} req/s "
            f"for 200s, {ceiling_304:,.0f} req/s for 304s"
        )

        from newsexchange.config import load_config
        from newsexchange.db import Database
        from newsexchange.ingest import run_fetch

        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(
                write_config(Path(tmp), urls, Path(tmp) / "bench.db"),
                env={"NEWSEXCHANGE_SECRET_KEY": "bench"},
            )
            # The loopback feed servers are internal addresses: listed, or they are refused.
            allow = [b.removeprefix("http://") for b in bases]
            fetch = cfg.fetch.model_copy(
                update={"parse_workers": args.parse_workers, "allow_private": allow}
            )
            cfg = cfg.model_copy(update={"fetch": fetch})
            db = Database(f"sqlite:///{tmp}/bench.db")
            print(
                f"{args.feeds} feeds × {ITEMS} items on {args.hosts} loopback hosts; "
                f"concurrency {cfg.fetch.concurrency}, per host {cfg.fetch.per_host}, "
                f"parse workers {cfg.fetch.parse_workers}"
            )
            profiles = _Profiles(args.profile)
            writer_cpu = _WriterCPU()
            with (
                profiles.run("first"),
                writer_cpu.run(),
                _ChildPeaks(skip=server.pid) as children,
            ):
                t, c, k = time.perf_counter(), time.process_time(), _children_cpu()
                first = run_fetch(db, cfg, now=NOW)
                t_first, c_first = time.perf_counter() - t, time.process_time() - c
                k_first = _children_cpu() - k  # the parse workers have exited by now
            worker_mb = max(children.peaks.values(), default=0.0)
            with profiles.run("refresh"):
                t, c = time.perf_counter(), time.process_time()
                again = run_fetch(db, cfg, now=NOW + timedelta(minutes=30))
                t_again, c_again = time.perf_counter() - t, time.process_time() - c
            db.dispose()
            size = (Path(tmp) / "bench.db").stat().st_size
        peak_mb = _peak_mb()
        assert first.failed == 0, first.failures[:3]
        assert again.not_modified == args.feeds, again.to_json()["failures"][:3]
        ms_first = (c_first + k_first) / args.feeds * 1000
        print(
            f"first fetch:       {args.feeds / t_first:8.0f} feeds/s  ({t_first:.2f} s, "
            f"{first.new_items} items stored, {first.new_items / t_first:,.0f} items/s; "
            f"{c_first / args.feeds * 1000:.1f} ms CPU a feed in this process"
            + (f" + {k_first / args.feeds * 1000:.1f} in the parse workers" if k_first else "")
            + f", of which {writer_cpu.seconds / args.feeds * 1000:.1f} in the writer thread)"
        )
        print(
            f"unchanged refresh: {args.feeds / t_again:8.0f} feeds/s  ({t_again:.2f} s, "
            f"all {again.not_modified} answered 304; "
            f"{c_again / args.feeds * 1000:.2f} ms CPU a feed in this process)"
        )
        print(
            f"peak memory:       {peak_mb:8.0f} MB max RSS (this process); database "
            f"{size / 1e6:.1f} MB"
        )
        if worker_mb:
            workers = args.parse_workers
            print(
                f"parse workers:     {worker_mb:8.0f} MB max RSS (the largest of {workers}); "
                f"with this process ≤ {peak_mb + workers * worker_mb:.0f} MB"
            )
        rate, cpu_ms = asyncio.run(_httpx_floor(urls, cfg.fetch.per_host, cfg.fetch.concurrency))
        print(
            f"bare httpx, same 304s: {rate:6.0f} req/s  ({cpu_ms:.2f} ms CPU a request: the "
            "floor under the refresh figure)"
        )
        parsers: dict[str, int] = {}
        for o in first.outcomes:
            parsers[o.parser or "?"] = parsers.get(o.parser or "?", 0) + 1
        print(f"parsers used:      {parsers}")

        if args.reader:
            n = min(args.reader_feeds or args.feeds, args.feeds)
            res = run_reader(args.reader, urls[:n], args.reader_workers)
            if isinstance(res, str):
                print(res)
            else:
                r_ms = res["first_cpu"] / n * 1000
                print(
                    f"reader ({n} feeds, workers={args.reader_workers}): "
                    f"first {n / res['first']:.0f} feeds/s, {r_ms:.1f} ms CPU a feed; refresh "
                    f"{n / res['refresh']:.0f} feeds/s, {res['refresh_cpu'] / n * 1000:.2f} ms "
                    f"CPU a feed; {res['rss_mb']:.0f} MB max RSS ({res['entries']:.0f} entries)"
                )
                print(
                    f"against reader:    first fetch {r_ms / ms_first:.1f}× less CPU a feed "
                    f"(target ≥ 7), {t_first / args.feeds / (res['first'] / n):.2f}× its "
                    f"time a feed"
                )
        else:
            print("reader: not compared (pass --reader /path/to/python-with-reader)")
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
