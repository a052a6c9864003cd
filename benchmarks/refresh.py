"""Unchanged refresh: N generated feeds, fetched once (untimed), then refreshed while every
feed answers 304, against lemon24/reader's ``update_feeds`` on the same server in the same run.

    .venv/bin/python benchmarks/refresh.py [--feeds 1000] [--hosts 25] [--refreshes 3]
        [--reader /work/wt/reader-venv/bin/python] [--profile FILE]

What it does:

1. Starts the feed server of ``benchmarks/ingest.py`` (the same generated feeds, ETags and
   gzip, on ``--hosts`` loopback addresses) in a separate process, with a counter of the TCP
   connections it accepted that this process reads between runs.
2. Runs the real ``run_fetch`` into a fresh SQLite database: the first fetch (untimed), then
   ``--refreshes`` unchanged refreshes, each a whole ``run_fetch`` (due sources, the
   requests, the writer's row updates, the report). For each it prints feeds/s, CPU ms per
   feed (this process and its children, from ``getrusage``) and the connections the server
   accepted during it.
3. With ``--reader PYTHON``: reader's first update (untimed) and the same number of
   refreshes (``update_feeds(scheduled=False)``: every feed answers 304), feeds/s, CPU
   ms per feed and connections, then the ratio of the best runs of each.

Targets (issue 16): connections reused (at most ``per_host`` per host, not one per feed),
≥ 5× reader's feeds/s in the same run, ≤ 1 ms CPU per feed.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

_spec = importlib.util.spec_from_file_location("bench_ingest", HERE / "ingest.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


# -- the feed server (its own process), counting connections ------------------------------------


class _CountingProtocol(bench._FeedProtocol):  # type: ignore[name-defined,misc]
    accepted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _CountingProtocol.accepted += 1
        super().connection_made(transport)


def serve(n: int, hosts: int) -> None:
    """Print the base URLs as JSON; then answer each line ``count`` on stdin with the number
    of connections accepted so far, until stdin closes."""
    for i in range(n):
        data, ctype = bench.make_feed(i)
        path = f"/feed/{i}.xml".encode()
        _CountingProtocol.feeds[path] = (f'"v{i}"'.encode(), data, gzip.compress(data, 6))
        _CountingProtocol.ctypes[path] = ctype.encode()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bases = []
        for h in range(hosts):
            addr = f"127.0.0.{h + 1}"
            server = await loop.create_server(_CountingProtocol, addr, 0, backlog=1024)
            bases.append(f"http://{addr}:{server.sockets[0].getsockname()[1]}")
        print(json.dumps(bases), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            # Counted on the loop's thread: every connection made so far has been counted.
            print(_CountingProtocol.accepted, flush=True)

    asyncio.run(main())


class Server:
    """The server process, seen from here."""

    def __init__(self, feeds: int, hosts: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--feeds", str(feeds), "--hosts", str(hosts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._out, self._in = self.proc.stdout, self.proc.stdin
        self.bases: list[str] = json.loads(self._out.readline())
        self._lock = threading.Lock()

    def connections(self) -> int:
        """Connections the server has accepted so far."""
        with self._lock:
            self._in.write("count\n")
            self._in.flush()
            return int(self._out.readline())

    def close(self) -> None:
        self._in.close()
        self.proc.wait(timeout=10)


# -- measuring ------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU of this process and of its waited-for children."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_config(folder: Path, bases: list[str], urls: list[str]) -> Any:
    """The benchmark's config: the generated sources, the loopback hosts allowed."""
    from newsexchange.config import load_config

    cfg = load_config(
        bench.write_config(folder, urls, folder / "bench.db"),
        env={"NEWSEXCHANGE_SECRET_KEY": "bench"},
    )
    allow = [b.removeprefix("http://") for b in bases]
    fetch = cfg.fetch.model_copy(update={"parse_workers": 0, "allow_private": allow})
    return cfg.model_copy(update={"fetch": fetch})


def run_ours(
    server: Server, urls: list[str], refreshes: int, profile: str | None, tmp: str
) -> list[dict[str, float]]:
    from newsexchange.db import Database
    from newsexchange.ingest import run_fetch

    runs: list[dict[str, float]] = []
    cfg = bench_config(Path(tmp), server.bases, urls)
    print(f"newsexchange: concurrency {cfg.fetch.concurrency}, per host {cfg.fetch.per_host}")
    db = Database(f"sqlite:///{tmp}/bench.db")
    first = run_fetch(db, cfg, now=bench.NOW)
    assert first.failed == 0, first.failures[:3]
    step = timedelta(minutes=cfg.fetch.interval_minutes + 1)
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    for k in range(1, refreshes + 1):
        conns = server.connections()
        t, c = time.perf_counter(), cpu_seconds()
        if prof:
            prof.enable()
        again = run_fetch(db, cfg, now=bench.NOW + k * step)
        if prof:
            prof.disable()
        wall, cpu = time.perf_counter() - t, cpu_seconds() - c
        conns = server.connections() - conns
        assert again.not_modified == len(urls), again.to_json()["failures"][:3]
        runs.append({"wall": wall, "cpu": cpu, "connections": conns})
    db.dispose()
    if prof and profile:
        prof.dump_stats(profile)
    return runs


async def _fetcher_alone(urls: list[str], allow: tuple[str, ...], concurrency: int) -> None:
    """The same conditional requests through the fetcher only (no database, no writer)."""
    from newsexchange.ingest.fetch import DefaultFetcher, FetchOptions

    fetcher = DefaultFetcher(FetchOptions(allow_private=allow))
    pending = iter(enumerate(urls))

    async def worker() -> None:
        for i, url in pending:
            result = await fetcher.fetch(url, etag=f'"v{i}"')
            assert result.not_modified, result.status

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await fetcher.aclose()


def run_floors(server: Server, urls: list[str], rounds: int) -> dict[str, list[dict[str, float]]]:
    """The fetcher alone, and bare httpx clients (one per host, as the fetcher has them),
    on the same 304s: the floors under a refresh."""
    allow = tuple(b.removeprefix("http://") for b in server.bases)
    out: dict[str, list[dict[str, float]]] = {"fetcher alone": [], "bare httpx": []}
    for _ in range(rounds):
        for name, make in (
            ("fetcher alone", lambda: _fetcher_alone(urls, allow, 50)),
            ("bare httpx", lambda: bench._httpx_floor(urls, 4, 50)),
        ):
            conns = server.connections()
            t, c = time.perf_counter(), cpu_seconds()
            asyncio.run(make())
            wall, cpu = time.perf_counter() - t, cpu_seconds() - c
            out[name].append(
                {"wall": wall, "cpu": cpu, "connections": server.connections() - conns}
            )
    return out


def child(folder: str, bases: list[str], feeds: int, part: int, parts: int) -> None:
    """A refreshing process of ``--processes``: every ``parts``-th source from ``part``;
    one ``run_fetch`` per line ``go K`` on stdin, answered with its CPU seconds."""
    from newsexchange.db import Database
    from newsexchange.ingest import run_fetch

    urls = bench.feed_urls(bases, feeds)
    cfg = bench_config(Path(folder), bases, urls)
    ids = [f"feed-{i}" for i in range(part, feeds, parts)]
    db = Database(f"sqlite:///{folder}/bench.db")
    step = timedelta(minutes=cfg.fetch.interval_minutes + 1)
    print("ready", flush=True)
    for line in sys.stdin:
        k = int(line.split()[1])
        c = cpu_seconds()
        report = run_fetch(db, cfg, now=bench.NOW + k * step, source_ids=ids)
        assert report.not_modified == len(ids), report.to_json()["failures"][:3]
        print(json.dumps({"cpu": cpu_seconds() - c}), flush=True)
    db.dispose()


def run_parallel(
    server: Server, feeds: int, processes: int, refreshes: int, first_k: int, tmp: str
) -> list[dict[str, float]]:
    """``processes`` processes refreshing a share of the sources each, at once (as the
    service's queue workers do), on the database the single-process runs left."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                json.dumps([tmp, server.bases, feeds, part, processes]),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for part in range(processes)
    ]
    runs: list[dict[str, float]] = []
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for k in range(first_k, first_k + refreshes):
            conns = server.connections()
            t = time.perf_counter()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"go {k}\n")
                p.stdin.flush()
            cpu = sum(json.loads(p.stdout.readline())["cpu"] for p in procs if p.stdout)
            wall = time.perf_counter() - t
            runs.append({"wall": wall, "cpu": cpu, "connections": server.connections() - conns})
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            p.wait(timeout=60)
    return runs


READER_SCRIPT = r"""
import json, sys, time
from reader import make_reader
urls = json.loads(sys.stdin.readline())
r = make_reader(sys.argv[1])
for u in urls:
    r.add_feed(u)
r.update_feeds(workers=int(sys.argv[2]))
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
    sys.stdin.readline()  # go
    t, c = time.perf_counter(), time.process_time()
    r.update_feeds(workers=int(sys.argv[2]), scheduled=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)
"""


def run_reader(
    python: str, server: Server, urls: list[str], refreshes: int, workers: int
) -> list[dict[str, float]] | str:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [python, "-c", READER_SCRIPT, f"{tmp}/reader.sqlite", str(workers), str(refreshes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(urls) + "\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            return f"reader failed: {proc.communicate()[1].strip().splitlines()[-1:]}"
        runs: list[dict[str, float]] = []
        for _ in range(refreshes):
            conns = server.connections()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            run: dict[str, Any] = json.loads(proc.stdout.readline())
            run["connections"] = server.connections() - conns
            runs.append(run)
        proc.stdin.close()
        proc.wait(timeout=60)
    return runs


def show(name: str, n: int, runs: list[dict[str, float]]) -> float:
    """Print each run; return the best feeds/s."""
    for k, r in enumerate(runs, 1):
        print(
            f"{name} refresh {k}: {n / r['wall']:7.0f} feeds/s  {r['cpu'] / n * 1000:5.2f} ms "
            f"CPU a feed  {r['connections']:5.0f} connections opened"
        )
    return max(n / r["wall"] for r in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feeds", type=int, default=1000)
    ap.add_argument("--hosts", type=int, default=25, help="distinct loopback hosts serving them")
    ap.add_argument("--refreshes", type=int, default=3, help="timed unchanged refreshes")
    ap.add_argument("--reader", metavar="PYTHON", help="a Python with lemon24/reader installed")
    ap.add_argument("--reader-workers", type=int, default=16)
    ap.add_argument("--profile", metavar="FILE", help="cProfile our refreshes into FILE")
    ap.add_argument(
        "--processes",
        type=int,
        default=2,
        metavar="P",
        help="then refresh with P processes at once, each a share of the sources (0: skip)",
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.feeds, args.hosts)
        return 0
    if args.child:
        child(*json.loads(args.child))
        return 0

    server = Server(args.feeds, args.hosts)
    try:
        urls = bench.feed_urls(server.bases, args.feeds)
        print(f"{args.feeds} feeds on {args.hosts} loopback hosts, {args.refreshes} refreshes")
        tmp_dir = tempfile.TemporaryDirectory()
        tmp = tmp_dir.name
        ours = run_ours(server, urls, args.refreshes, args.profile, tmp)
        best = show("newsexchange", args.feeds, ours)
        cpu_ms = min(r["cpu"] for r in ours) / args.feeds * 1000
        conns = max(r["connections"] for r in ours)
        print(
            f"target: connections reused — at most {conns:.0f} a refresh for {args.feeds} "
            f"feeds ({'met' if conns < args.feeds / 4 else 'NOT met'}); ≤ 1 ms CPU a feed — "
            f"{cpu_ms:.2f} ({'met' if cpu_ms <= 1 else 'NOT met'})"
        )
        if args.processes:
            par = run_parallel(
                server, args.feeds, args.processes, args.refreshes, args.refreshes + 1, tmp
            )
            pbest = show(f"newsexchange, {args.processes} processes", args.feeds, par)
            print(f"{args.processes} processes against 1: {pbest / best:.2f}× the feeds/s")
            best = max(best, pbest)
        tmp_dir.cleanup()
        floors = run_floors(server, urls, args.refreshes)
        for name, runs in floors.items():
            show(name, args.feeds, runs)
        floor_ms = min(r["cpu"] for r in floors["bare httpx"]) / args.feeds * 1000
        print(
            f"CPU a feed against bare httpx's: {cpu_ms:.2f} / {floor_ms:.2f} ms = "
            f"{cpu_ms / floor_ms:.2f}×"
        )
        if args.reader:
            theirs = run_reader(args.reader, server, urls, args.refreshes, args.reader_workers)
            if isinstance(theirs, str):
                print(theirs)
            else:
                rbest = show(f"reader (workers={args.reader_workers})", args.feeds, theirs)
                ratio = best / rbest
                print(
                    f"target: ≥ 5× reader's feeds/s — best {best:.0f} against {rbest:.0f}: "
                    f"{ratio:.1f}× ({'met' if ratio >= 5 else 'NOT met'})"
                )
        else:
            print("reader: not compared (pass --reader /path/to/python-with-reader)")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
