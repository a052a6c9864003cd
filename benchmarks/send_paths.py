"""Sending the way users run it, against the smtplib ceiling, to Postfix's smtp-sink (issue 16).

    .venv/bin/python benchmarks/send_paths.py [--recipients 5000] [--paths all]
        [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Paths (``--paths`` takes a comma-separated subset):

- ``send-sqlite-1``, ``send-sqlite-2``: ``newsexchange send ID`` (one, or two at once) on SQLite;
- ``send-pg-1``, ``send-pg-2``: the same on PostgreSQL;
- ``worker-pg-1``, ``worker-pg-2``: ``newsexchange worker`` processes (one, or two) on
  PostgreSQL's work queue, the send kicked the way an approval kicks it (the shards of
  ``service.send_shard_size`` and ``service.queue_concurrency`` at their defaults);
- ``dispatch-sqlite``: the service's dispatch job on SQLite (``serve``/``worker`` without a
  queue run it in-process: the same ``run_send`` as ``send``, no progress bar), called here.

Every path keeps the defaults (``mail.smtp.connections`` 2, claim TTL, chunk sizes) except
``mail.rate_per_second``, lifted. Each digest is the 20-item Russian digest of
``benchmarks/send.py`` (~87 kB per personalized message). The sink is ``/usr/sbin/smtp-sink``
(Postfix's, C, event-driven), one for the whole run.

**The ceiling**, measured just before each path in the same run: a plain ``smtplib``
``sendmail`` loop sending one of those personalized messages (same bytes) over the same
number of processes (1 or 2), each with ``mail.smtp.connections`` (2) threads, each thread
its own connection — no database, no rendering. The path's figure is its steady rate:
messages marked sent in the database between the first poll that sees one and the last
(every 0.1 s), so the CLI's start-up (imports, migration check) is left out and shown apart
as ``wall``. ``cpu/msg`` is the senders' CPU (children's rusage) per message, start-up
included.

**Delayed ACK.** Linux delays an ACK up to 40 ms; a sender that writes the body and the
final ``.`` in two writes with Nagle's algorithm on waits that long per message, capping a
connection at ~25 msg/s. ``per-conn`` is each path's rate divided by its connections: well
above 25 means the wait is gone. ``--nagle`` repeats ``send-sqlite-1`` with ``TCP_NODELAY``
turned off in the sender (an environment switch read by this script's child only) to show
the difference in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

ENV = {**os.environ, "NEWSEXCHANGE_SECRET_KEY": "bench-secret"}
EXE = str(Path(sys.executable).with_name("newsexchange"))
CONNECTIONS = 2  # mail.smtp.connections' default (checked against the schema in main)
ALL_PATHS = (
    "send-sqlite-1",
    "send-sqlite-2",
    "dispatch-sqlite",
    "send-pg-1",
    "send-pg-2",
    "worker-pg-1",
    "worker-pg-2",
)


# -- the sink and the ceiling ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def smtp_sink() -> Iterator[int]:
    """Postfix's smtp-sink on a free loopback port (PIPELINING announced, everything
    accepted, nothing kept)."""
    if not Path("/usr/sbin/smtp-sink").exists():
        raise SystemExit(
            "benchmarks/send_paths.py needs Postfix's smtp-sink: as root, "
            "apt-get install --no-install-recommends postfix (no mail daemon is started here)"
        )
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
    proc = subprocess.Popen(
        ["/usr/sbin/smtp-sink", *user, "-m", "1000", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"smtp-sink exited with {proc.returncode}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _ceiling_child(port: int, n: int, connections: int, message_file: str) -> None:
    """One process of the ceiling: ``connections`` threads, each an smtplib.SMTP and a
    plain ``sendmail`` loop; prints its messages/s (JSON) when done."""
    message = Path(message_file).read_bytes()
    per = n // connections

    def loop() -> None:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench") as conn:
            for i in range(per):
                conn.sendmail("news@example.org", [f"x{i}@example.org"], message)

    threads = [threading.Thread(target=loop) for _ in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    print(json.dumps({"sent": per * connections, "seconds": elapsed}))


def ceiling(port: int, processes: int, n: int, message_file: Path) -> float:
    """Messages/s of ``processes`` smtplib loops at once (``n`` messages each)."""
    cmd = [sys.executable, __file__, "--ceiling-child", str(port), str(n), str(CONNECTIONS)]
    procs = [
        subprocess.Popen([*cmd, str(message_file)], stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    outs = [json.loads(p.communicate()[0]) for p in procs]
    elapsed = max(o["seconds"] for o in outs)
    return float(sum(o["sent"] for o in outs) / elapsed)


# -- the databases --------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, admin_url: str, folder: Path) -> Iterator[str]:
    """A new SQLite file in ``folder``, or a new PostgreSQL database (``nx_bench_<random>``,
    created and dropped through ``admin_url``)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    from sqlalchemy import create_engine, text

    name = f"nx_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- one path -------------------------------------------------------------------------------


@dataclass
class Result:
    path: str
    senders: int
    connections: int
    sent: int
    steady: float  # msg/s between the first and the last sent row seen
    wall: float  # seconds from starting the senders to the last row sent
    first: float  # seconds from starting the senders to the first row sent
    cpu_per_msg: float  # senders' CPU seconds per message, start-up included
    ceiling: float

    def line(self) -> str:
        ratio = self.steady / self.ceiling
        return (
            f"{self.path:<16} {self.senders:>7} {self.connections:>5} {self.sent:>6} "
            f"{self.steady:>8.0f} {self.ceiling:>8.0f} {ratio:>6.0%} "
            f"{self.steady / self.connections:>8.0f} {self.first:>5.1f} {self.wall:>6.1f} "
            f"{self.cpu_per_msg * 1000:>7.2f}"
        )


HEADER = (
    f"{'path':<16} {'senders':>7} {'conns':>5} {'sent':>6} {'msg/s':>8} {'ceiling':>8} "
    f"{'ratio':>6} {'per-conn':>8} {'first':>5} {'wall':>6} {'cpu/ms':>7}"
)


def _sent_counter(url: str, digest_id: int) -> tuple[Callable[[], int], Callable[[], None]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    stmt = text("SELECT count(*) FROM deliveries WHERE digest_id = :d AND status = 'sent'")

    def count() -> int:
        with engine.connect() as c:
            return int(c.scalar(stmt, {"d": digest_id}) or 0)

    return count, engine.dispose


def _watch(
    count: Callable[[], int],
    n: int,
    started: float,
    timeout: float,
    procs: list[subprocess.Popen[Any]] = (),  # type: ignore[assignment]
) -> tuple[float, float, float]:
    """Poll until ``n`` rows are sent: (steady msg/s, seconds from ``started`` to the last
    and to the first row seen sent). Gives up when every one of ``procs`` has exited."""
    first: tuple[float, int] | None = None
    while True:
        if procs and all(p.poll() is not None for p in procs) and count() < n:
            raise RuntimeError(f"the senders exited with {[p.returncode for p in procs]}")
        now = time.perf_counter()
        done = count()
        if done and first is None:
            first = (now, done)
        if done >= n:
            break
        if now - started > timeout:
            raise TimeoutError(f"{done} of {n} sent after {timeout:.0f} s")
        time.sleep(0.1)
    assert first is not None
    t_first, c_first = first
    steady = (done - c_first) / (now - t_first) if now > t_first else float("nan")
    return steady, now - started, t_first - started


def run_path(
    path: str,
    port: int,
    n: int,
    admin_url: str,
    message_file: Path,
    *,
    items: int = 20,
    nagle: bool = False,
) -> Result:
    from send import seed, write_config

    from newsexchange.config import load_config
    from newsexchange.db import Database

    kind, senders = path.split("-")[0], path.split("-")[-1]
    db_kind = "pg" if "-pg" in path else "sqlite"
    count_senders = 1 if senders == "sqlite" else int(senders)
    with (
        tempfile.TemporaryDirectory(prefix="nx-paths-") as tmp,
        fresh_database("sqlite" if db_kind == "sqlite" else "pg", admin_url, Path(tmp)) as url,
    ):
        cfg_path = write_config(Path(tmp), port, database_url=url)
        cfg = load_config(cfg_path, env=ENV)
        db = Database(url)
        digest_id = seed(cfg, db, n, enqueue=kind != "worker", items=items)
        db.dispose()
        ceil = ceiling(port, count_senders, min(n, 3000), message_file)
        count, dispose = _sent_counter(url, digest_id)
        env = {**ENV, "NX_BENCH_NAGLE": "1"} if nagle else ENV
        try:
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if kind == "send":
                cmd = [sys.executable, __file__, "--send-child", str(cfg_path), str(digest_id)]
                started = time.perf_counter()
                procs = [subprocess.Popen(cmd, env=env) for _ in range(count_senders)]
                steady, wall, first = _watch(count, n, started, 900, procs)
                for p in procs:
                    p.wait(120)
                conns = CONNECTIONS * count_senders
            elif kind == "dispatch":
                cmd = [sys.executable, __file__, "--dispatch-child", str(cfg_path)]
                started = time.perf_counter()
                proc = subprocess.Popen(cmd, env=env)
                steady, wall, first = _watch(count, n, started, 900, [proc])
                proc.wait(120)
                conns = CONNECTIONS
            else:
                steady, wall, first, conns = _run_workers(cfg, cfg_path, count, n, count_senders)
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            # The ceiling's children are counted in cpu0 already.
            cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        finally:
            dispose()
    return Result(path, count_senders, conns, n, steady, wall, first, cpu / n, ceil)


def _run_workers(
    cfg: Any, cfg_path: Path, count: Callable[[], int], n: int, workers: int
) -> tuple[float, float, float, int]:
    from sqlalchemy import text

    from newsexchange.db import Database
    from newsexchange.service.queue import deferrer_for, kick

    cmd = [EXE, "worker", "--config", str(cfg_path), "--json"]
    procs = [
        subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    db = Database(cfg.database_url, run_migrations=False)
    try:
        deadline = time.monotonic() + 120
        while True:
            with db.session() as s:
                up = int(s.scalar(text("SELECT count(*) FROM procrastinate_workers")) or 0)
            if up == workers:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not register")
            time.sleep(0.1)
        started = time.perf_counter()
        kick(cfg, db, "send")
        steady, wall, first = _watch(count, n, started, 900, procs)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(120)
        deferrer_for(cfg).close()
        db.dispose()
    shards = min(cfg.service.queue_concurrency, -(-n // cfg.service.send_shard_size))
    return steady, wall, first, workers * shards * CONNECTIONS


# -- children -------------------------------------------------------------------------------


def _nagle_switch() -> None:
    """With NX_BENCH_NAGLE=1, the sender's connections keep Nagle's algorithm (TCP_NODELAY
    is not set): the before, for comparison in the same run."""
    if os.environ.get("NX_BENCH_NAGLE") != "1":
        return
    real = socket.socket.setsockopt

    def setsockopt(self: socket.socket, level: int, opt: int, value: Any) -> None:
        if level == socket.IPPROTO_TCP and opt == socket.TCP_NODELAY:
            return
        real(self, level, opt, value)

    socket.socket.setsockopt = setsockopt  # type: ignore[method-assign,assignment]


def _send_child(cfg_path: str, digest_id: str) -> None:
    """``newsexchange send ID --config PATH --json``, in this process (so the Nagle switch
    can apply), output dropped."""
    _nagle_switch()
    from newsexchange.cli import main as cli_main

    with open(os.devnull, "w") as out, contextlib.redirect_stdout(out):
        cli_main(["send", digest_id, "--config", cfg_path, "--json"])


def _dispatch_child(cfg_path: str) -> None:
    """The service's dispatch job on SQLite, as the in-process scheduler runs it."""
    _nagle_switch()
    from newsexchange.config import load_config
    from newsexchange.db import Database
    from newsexchange.db.tables import utcnow
    from newsexchange.service import jobs

    cfg = load_config(Path(cfg_path), env=os.environ)
    db = Database(cfg.database_url)

    jobs._step_send(cfg, db, utcnow(), None)
    db.dispose()


def _message_file(folder: Path, items: int) -> Path:
    """One personalized message of the benchmark's digest, for the ceiling."""
    from datetime import UTC, datetime

    from send import seed, write_config
    from sqlalchemy import select

    from newsexchange.config import load_config
    from newsexchange.db import Database, Delivery, Digest
    from newsexchange.delivery.send import Renderer

    url = f"sqlite:///{folder / 'message.db'}"
    cfg = load_config(write_config(folder, 25, database_url=url), env=ENV)
    db = Database(url)
    digest_id = seed(cfg, db, 1, items=items)
    with db.session() as s:
        digest = s.get(Digest, digest_id)
        assert digest is not None
        row = s.scalars(select(Delivery).limit(1)).one()
        prepared = Renderer(cfg, now=datetime.now(UTC)).get(s, digest, "media", "ru")
        raw = prepared.personalize(row, "Журналист").raw or b""
    db.dispose()
    out = folder / "message.eml"
    out.write_bytes(raw)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipients", type=int, default=5000)
    p.add_argument("--paths", default="all")
    p.add_argument("--items", type=int, default=20, help="items in the digest (its size)")
    p.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--nagle", action="store_true", help="also send-sqlite-1 without TCP_NODELAY")
    p.add_argument("--ceiling-child", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--send-child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--dispatch-child", nargs=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.ceiling_child:
        port, n, conns, message = args.ceiling_child
        _ceiling_child(int(port), int(n), int(conns), message)
        return 0
    if args.send_child:
        _send_child(*args.send_child)
        return 0
    if args.dispatch_child:
        _dispatch_child(*args.dispatch_child)
        return 0

    from newsexchange.config.schema import SmtpSettings

    assert SmtpSettings.model_fields["connections"].default == CONNECTIONS
    paths = list(ALL_PATHS) if args.paths == "all" else args.paths.split(",")
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 CPUs shared)", flush=True)
    worst = 1.0
    with tempfile.TemporaryDirectory(prefix="nx-paths-") as tmp, smtp_sink() as port:
        message = _message_file(Path(tmp), args.items)
        print(f"message: {message.stat().st_size / 1024:.0f} kB ({args.items} items)")
        print(HEADER, flush=True)
        runs = [(path, False) for path in paths]
        if args.nagle:
            runs.append(("send-sqlite-1", True))
        for path, nagle in runs:
            r = run_path(
                path, port, args.recipients, args.admin_url, message, items=args.items, nagle=nagle
            )
            if nagle:
                r.path = "nagle-sqlite-1"
            else:
                worst = min(worst, r.steady / r.ceiling)
            print(r.line(), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}; worst ratio {worst:.0%} (target 80%)")
    return 0 if worst >= 0.8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
