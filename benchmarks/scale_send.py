"""A send shared by many workers on PostgreSQL's work queue (issue 13).

    .venv/bin/python benchmarks/scale_send.py [--recipients 20000] [--workers 1,2,3]
        [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

For each worker count, on a fresh database (``nx_bench_<random>``, created through the
``test`` database and dropped after): one approved digest to N recipients, ``newsexchange
worker`` processes started and registered, then ``send`` kicked; the figure is N over the
time from the kick to the last delivery recorded as sent, and each worker's share of the
messages (from its ``--json`` report). Then ``kill -9`` of one of two workers at a quarter of
the send: seconds until its claimed rows were all taken over by the other (its shards put
back by the stalled-job reaper and resumed), duplicates and misses counted at the sink.

The sink is a small asyncio SMTP server in its own process (no GIL shared with anyone) that
accepts everything and writes each accepted message's recipient to a file. ``mail.
rate_per_second`` is lifted; each worker runs 2 shards at once over 2 SMTP connections each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARD = 1000
CONNECTIONS = 2
CONCURRENCY = 2


# -- the sink ---------------------------------------------------------------------------------


def _sink(port: int, path: str, counter: Any, ready: Any) -> None:
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _session(reader, writer)
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
        ):  # the kill -9 measurement's dead worker
            writer.close()

    async def _session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        rcpts: list[str] = []
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                writer.write(b"250-sink\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
            elif cmd == b"RCPT":
                rcpts.append(line.decode().split("<", 1)[1].split(">", 1)[0])
                writer.write(b"250 OK\r\n")
            elif cmd == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                await reader.readuntil(b"\r\n.\r\n")
                for r in rcpts:
                    out.write(r + "\n")
                out.flush()
                with counter.get_lock():
                    counter.value += len(rcpts)
                rcpts = []
                writer.write(b"250 OK queued\r\n")
            elif cmd == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            elif cmd == b"RSET":
                rcpts = []
                writer.write(b"250 OK\r\n")
            else:  # HELO, MAIL, NOOP
                writer.write(b"250 OK\r\n")
            await writer.drain()
        writer.close()

    async def main() -> None:
        # limit: a digest is ~80 kB, beyond asyncio's 64 kB default for readuntil
        server = await asyncio.start_server(session, "127.0.0.1", port, limit=2**24)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class Sink:
    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.path = workdir / "received.txt"
        self.path.touch()
        self.counter = mp.Value("i", 0)
        ready = mp.Event()
        self.proc = mp.Process(
            target=_sink, args=(self.port, str(self.path), self.counter, ready), daemon=True
        )
        self.proc.start()
        ready.wait(10)

    def count(self) -> int:
        return int(self.counter.value)

    def received(self) -> Counter[str]:
        return Counter(self.path.read_text(encoding="utf-8").split())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join(5)


# -- a run ------------------------------------------------------------------------------------


def _config(workdir: Path, url: str, smtp_port: int) -> Path:
    from tests.test_delivery_support import FROM

    path = workdir / "feeds.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            timezone: Europe/Helsinki
            database_url: {url}
            public_url: https://news.example.org
            mail:
              backend: smtp
              from: "{FROM}"
              rate_per_second: 1000000
              smtp: {{host: 127.0.0.1, port: {smtp_port}, connections: {CONNECTIONS}, timeout: 30}}
            regions:
              joensuu:      {{name: Joensuu, language: fi, timezone: Europe/Helsinki}}
              petrozavodsk: {{name: Petrozavodsk, language: ru, timezone: Europe/Moscow}}
            lists:
              petrozavodsk-media: {{name: Petrozavodsk media, language: ru}}
            exchanges:
              - id: joensuu-to-petrozavodsk
                name: Новости Йоэнсуу
                from: [joensuu]
                to: petrozavodsk
                language: ru
                editors: [editor@example.fi]
                lists: [petrozavodsk-media]
            service:
              send_shard_size: {SHARD}
              dispatch_minutes: 600
              approvals_minutes: 600
              alerts_minutes: 600
            """
        ),
        encoding="utf-8",
    )
    return path


ENV = {**os.environ, "NEWSEXCHANGE_SECRET_KEY": "bench-secret"}


class _Setup:
    """A config, a seeded approved digest, a sink and the database, for one measurement."""

    def __init__(self, url: str, n: int) -> None:
        from newsexchange.config import load_config
        from newsexchange.db import Database
        from tests.test_delivery_support import seed_digest

        self.tmp = tempfile.TemporaryDirectory(prefix="nx-scale-")
        workdir = Path(self.tmp.name)
        self.sink = Sink(workdir)
        self.path = _config(workdir, url, self.sink.port)
        self.config = load_config(self.path, env=ENV)
        self.db = Database(url)
        self.n = n
        self.digest_id = seed_digest(self.db, self.config, n, enqueue=False)

    def start_workers(self, count: int) -> list[subprocess.Popen[str]]:
        exe = Path(sys.executable).with_name("newsexchange")
        procs = [
            subprocess.Popen(
                [
                    str(exe),
                    "worker",
                    "--config",
                    str(self.path),
                    "--json",
                    "--concurrency",
                    str(CONCURRENCY),
                ],
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(count)
        ]
        self.wait(lambda: self.scalar("SELECT count(*) FROM procrastinate_workers") == count, 120)
        return procs

    def scalar(self, sql: str, **params: Any) -> int:
        from sqlalchemy import text

        with self.db.session() as s:
            return int(s.scalar(text(sql), params) or 0)

    def sent(self) -> int:
        return self.scalar(
            "SELECT count(*) FROM deliveries WHERE digest_id = :d AND status = 'sent'",
            d=self.digest_id,
        )

    def kick(self) -> None:
        from newsexchange.service.queue import kick

        kick(self.config, self.db, "send")

    @staticmethod
    def wait(cond: Any, timeout: float) -> float:
        started = time.monotonic()
        while not cond():
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"gave up after {timeout}s")
            time.sleep(0.05)
        return time.monotonic() - started

    def close(self) -> None:
        from newsexchange.service.queue import deferrer_for

        deferrer_for(self.config).close()
        self.db.dispose()
        self.sink.stop()
        self.tmp.cleanup()


def _stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


def run(url: str, n: int, workers: int) -> dict[str, Any]:
    """Send one digest to ``n`` recipients with ``workers`` worker processes, on the fresh
    database ``url``: messages a second, and each worker's share of the messages."""
    setup = _Setup(url, n)
    try:
        procs = setup.start_workers(workers)
        started = time.monotonic()
        setup.kick()
        setup.wait(lambda: setup.sent() == n, 1800)
        elapsed = time.monotonic() - started
        reports = [_stop(p) for p in procs]
        received = setup.sink.received()
        return {
            "workers": workers,
            "recipients": n,
            "seconds": round(elapsed, 2),
            "msg_per_s": round(n / elapsed, 1),
            "shares": [round(r.get("sent", 0) / n, 3) for r in reports],
            "duplicates": sum(c - 1 for c in received.values()),
            "missed": n - len(received),
        }
    finally:
        setup.close()


def run_kill(url: str, n: int) -> dict[str, Any]:
    """Two workers; ``kill -9`` one at a quarter of the send: seconds until the other has
    taken over every row the dead one had claimed (its shards resumed), duplicates, misses."""
    setup = _Setup(url, n)
    try:
        victim, survivor = setup.start_workers(2)
        setup.kick()
        setup.wait(lambda: setup.sink.count() >= n // 4, 600)
        victim.kill()
        killed = time.monotonic()
        victim.communicate()
        held = setup.scalar(
            "SELECT count(*) FROM deliveries WHERE status = 'claimed' AND claimed_by LIKE :p",
            p=f"%:{victim.pid}:%",
        )
        resumed = setup.wait(
            lambda: (
                setup.scalar(
                    "SELECT count(*) FROM deliveries WHERE status = 'claimed' AND claimed_by LIKE :p",
                    p=f"%:{victim.pid}:%",
                )
                == 0
            ),
            600,
        )
        setup.wait(lambda: setup.sent() == n, 1800)
        finished = time.monotonic() - killed
        _stop(survivor)
        received = setup.sink.received()
        return {
            "recipients": n,
            "claimed_by_the_dead_worker": held,
            "resumed_after_s": round(resumed, 1),
            "finished_after_s": round(finished, 1),
            "duplicates": sum(c - 1 for c in received.values()),
            "duplicate_bound": CONCURRENCY * CONNECTIONS,
            "missed": n - len(received),
        }
    finally:
        setup.close()


# -- main -------------------------------------------------------------------------------------


def _fresh_db(admin_url: str) -> tuple[str, Any]:
    from sqlalchemy import create_engine, text

    name = f"nx_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipients", type=int, default=20000)
    p.add_argument("--workers", default="1,2,3")
    p.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--no-kill", action="store_true", help="skip the kill -9 measurement")
    args = p.parse_args()
    for count in [int(w) for w in args.workers.split(",")]:
        url, drop = _fresh_db(args.admin_url)
        try:
            print(json.dumps(run(url, args.recipients, count)), flush=True)
        finally:
            drop()
    if not args.no_kill:
        url, drop = _fresh_db(args.admin_url)
        try:
            print(json.dumps({"kill": run_kill(url, args.recipients)}), flush=True)
        finally:
            drop()


if __name__ == "__main__":
    main()
