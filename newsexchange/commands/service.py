"""``newsexchange serve`` (scheduler + web app + a queue worker in one process),
``newsexchange worker`` (scheduler + queue worker, no web app) and ``newsexchange run-once``
(every step once, in order: for cron users and the demo).

On PostgreSQL the scheduler defers each fired job to the work queue and the process's queue
worker (procrastinate, :mod:`newsexchange.service.worker`) takes jobs from it, whoever queued
them; on SQLite both commands run the jobs in process (docs/operations.md, "The work queue").
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

from newsexchange.commands.context import Context, add_common
from newsexchange.errors import ConfigError
from newsexchange.logs import install_secret_redaction

log = logging.getLogger("newsexchange.serve")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the exchange as a service: the scheduler and the web app in one process",
    )
    add_common(p)
    p.add_argument("--host", help="address to listen on (default: service.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: service.port, 8080)")
    p.set_defaults(handler=serve, log_base=logging.INFO)

    p = sub.add_parser(
        "worker",
        help="run a worker without the web app: the scheduler, and on PostgreSQL a worker "
        "of the shared work queue",
    )
    add_common(p)
    p.add_argument(
        "--concurrency",
        type=int,
        help="jobs this worker runs at once (default: service.queue_concurrency, 4)",
    )
    p.set_defaults(handler=worker, log_base=logging.INFO)

    p = sub.add_parser(
        "jobs", help="the service's schedule: each job's next run and its latest runs"
    )
    add_common(p)
    p.set_defaults(handler=jobs)

    p = sub.add_parser(
        "run-once",
        help="run every step once, in order (fetch, translate, digests, approvals, send)",
    )
    add_common(p)
    p.set_defaults(handler=run_once)


def jobs(ctx: Context) -> int:
    """What the scheduler will do next and how its jobs went (read from the database, so it
    works whether or not a service is running)."""
    from newsexchange.db.queries.jobs import job_history, stored_jobs
    from newsexchange.service import job_specs

    cfg = ctx.config
    db = ctx.db
    stored = {j["id"]: j["next_run_at"] for j in stored_jobs(db)}
    specs = job_specs(cfg)
    history = job_history(db, [spec.id for spec in specs])
    rows: list[dict[str, Any]] = [
        {
            "job": spec.id,
            "schedule": spec.spec,
            "next_run": stored.get(spec.id),
            "last_run": history[spec.id].last_run,
            "last_ok": history[spec.id].last_ok,
            "last_error": history[spec.id].last_error,
            "last_success": history[spec.id].last_success,
            "failures": history[spec.id].failures,
        }
        for spec in specs
    ]
    data: dict[str, Any] = {"ok": True, "scheduled": bool(stored), "jobs": rows}
    queue = _queue_counts(ctx)
    if queue is not None:
        data["queue"] = queue

    def when(t: Any) -> str:
        return t.astimezone(cfg.tz).strftime("%Y-%m-%d %H:%M") if t else "-"

    def text() -> str:
        lines = [f"{'job':32} {'next run':16}  {'last run':16}  result  schedule"]
        for r in rows:
            result = "-" if r["last_ok"] is None else ("ok" if r["last_ok"] else "FAILED")
            lines.append(
                f"{r['job']:32} {when(r['next_run']):16}  {when(r['last_run']):16}  {result:6}  "
                f"{r['schedule']}"
            )
            if r["last_error"]:
                lines.append(f"{'':32} last error: {r['last_error'][:200]}")
        if queue:
            lines.append("work queue (jobs per task): " + "; ".join(
                f"{task.removeprefix('newsexchange.')} todo={c.get('todo', 0)} "
                f"doing={c.get('doing', 0)} failed={c.get('failed', 0)}"
                for task, c in sorted(queue.items())
            ))  # fmt: skip
        if not stored:
            lines.append(
                "(no stored schedule yet: `newsexchange serve` creates it on its first start)"
            )
        lines.append(f"times in {cfg.timezone}")
        return "\n".join(lines)

    ctx.emit(data, text)
    return 0


def _queue_counts(ctx: Context) -> dict[str, dict[str, int]] | None:
    """The queue's jobs per task and status on PostgreSQL, None on SQLite (or when the queue
    cannot be read: ``jobs`` still shows the schedule)."""
    from newsexchange.service.queue import queue_counts

    try:
        return queue_counts(ctx.config)
    except Exception:
        log.warning("the work queue could not be read", exc_info=True)
        return None


def run_once(ctx: Context) -> int:
    from newsexchange.service import RUN_ONCE_ORDER, Runner, prepare_demo

    cfg = ctx.config
    install_secret_redaction(cfg)
    runner = Runner(cfg, ctx.db)
    if cfg.service.demo:
        prepare_demo(cfg, ctx.db, now=ctx.now())
    steps: dict[str, Any] = {}
    for name in RUN_ONCE_ORDER:
        if (name == "imap" and cfg.mail.imap is None) or (name == "demo" and not cfg.service.demo):
            continue
        steps[name] = runner.run(name).to_json()
    failed = [n for n, s in steps.items() if s["status"] == "failed"]
    data = {"ok": not failed, "steps": steps, "failed": failed}

    def text() -> str:
        lines = []
        for n, s in steps.items():
            line = f"{n:10} {s['status']:11} {s['seconds']:7.2f}s"
            if s.get("error"):
                line += f"  {s['error']}"
            elif s.get("summary"):
                counts = {
                    k: v
                    for k, v in s["summary"].items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
                line += "  " + " ".join(f"{k}={v}" for k, v in list(counts.items())[:8])
            lines.append(line)
        return "\n".join(lines)

    ctx.emit(data, text)
    return 1 if failed else 0


class _Server:
    """uvicorn's Server, with signals handled our way.

    uvicorn re-raises a captured SIGTERM after its shutdown, so the process would die of the
    signal (exit -15) instead of exiting 0; and the scheduler must stop taking jobs at the
    moment the signal arrives, not after the web server has drained.
    """

    def __init__(self, app: Any, host: str, port: int, on_signal: Any) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,  # paths carry signed tokens: never in the log
            lifespan="off",
            server_header=False,
        )
        on_sig = on_signal

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return

                def handle(sig: int, _frame: Any) -> None:
                    if self.should_exit:  # a second signal: stop waiting for connections
                        self.force_exit = True
                    self.should_exit = True
                    on_sig(sig)

                old = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for s, h in old.items():
                        signal.signal(s, h)

        self.server = Server(config)

    def run(self, sock: socket.socket) -> None:
        self.server.run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """Bind the web port *before* the scheduler starts, so a busy port is a clear usage error
    (exit 2) instead of a service that schedules jobs and then fails to serve."""
    try:
        family, kind, proto, _canon, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another "
            "`newsexchange serve` running? pass --port, or set service.port in feeds.yaml)"
        ) from exc
    sock.set_inheritable(True)
    return sock


def serve(ctx: Context) -> int:
    from newsexchange.web.app import create_app

    cfg = ctx.config
    install_secret_redaction(cfg)
    for name in ("uvicorn", "uvicorn.error", "apscheduler"):
        lg = logging.getLogger(name)
        lg.handlers[:] = logging.getLogger("newsexchange").handlers
        lg.setLevel(logging.WARNING if name == "apscheduler" else logging.INFO)
        lg.propagate = False
    # A send that outlasts the dispatch interval is normal (max_instances=1 keeps it single);
    # APScheduler warns at every tick it skips — not news for an operator.
    logging.getLogger("apscheduler.scheduler").addFilter(
        lambda r: "maximum number of running instances" not in r.getMessage()
    )
    host = ctx.args.host or cfg.service.host
    port = ctx.args.port or cfg.service.port
    db = ctx.db
    sock = _listen(host, port)
    service, qworker = _service_and_worker(ctx)
    stopping = threading.Event()

    def on_signal(sig: int) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("signal received: stopping", extra={"signal": signal.Signals(sig).name})
            service.begin_shutdown()
            if qworker is not None:
                qworker.stop()

    service.start()
    thread = None
    if qworker is not None:
        # The queue worker on an event loop of its own in a thread; its signals are ours.
        thread = threading.Thread(target=qworker.run, name="queue-worker", daemon=True)
        thread.start()
    log.info(
        "serving",
        extra={"url": f"http://{host}:{port}", "public_url": cfg.public_url, "pid": os.getpid()},
    )
    try:
        _Server(create_app(cfg, db), host, port, on_signal).run(sock)
    finally:
        service.begin_shutdown()
        if qworker is not None and thread is not None:
            qworker.stop()
            thread.join()  # running jobs end their chunk
            qworker.close()
        service.stop(wait=True)  # running steps finish; nothing is left half-written
    log.info("stopped")
    return 0


def _service_and_worker(ctx: Context, concurrency: int | None = None) -> tuple[Any, Any]:
    """The scheduler, and on PostgreSQL the queue worker its fires defer to (None on
    SQLite, where the scheduler runs the jobs itself)."""
    from newsexchange.service import Service
    from newsexchange.service.queue import uses_queue
    from newsexchange.service.worker import QueueWorker

    cfg = ctx.config
    if not uses_queue(cfg):
        return Service(cfg, ctx.db), None
    qworker = QueueWorker(cfg, ctx.db, concurrency=concurrency)
    deferrer = qworker.deferrer

    def dispatch(job_id: str, min_gap: float) -> bool:
        return deferrer.step(job_id, min_gap=min_gap)

    return Service(cfg, ctx.db, dispatch=dispatch), qworker


def worker(ctx: Context) -> int:
    """A worker alone: APScheduler says when, the queue's worker (PostgreSQL) runs what is
    queued by anyone; on SQLite the in-process service, without the web app. SIGTERM/SIGINT
    stop taking jobs and let the running ones finish their chunk; exit 0, and with --json a
    report of what this worker did."""
    cfg = ctx.config
    install_secret_redaction(cfg)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    service, qworker = _service_and_worker(ctx, ctx.args.concurrency)
    stopped = threading.Event()

    def on_signal(sig: int, _frame: Any) -> None:
        if not stopped.is_set():
            stopped.set()
            log.info("signal received: stopping", extra={"signal": signal.Signals(sig).name})
            service.begin_shutdown()
            if qworker is not None:
                qworker.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.start()
        log.info("worker started", extra={"pid": os.getpid(), "queue": qworker is not None})
        if qworker is not None:
            qworker.run()  # until stop()
        else:
            while not stopped.wait(1.0):
                pass
    finally:
        service.stop(wait=True)
        if qworker is not None:
            qworker.close()
        for s, h in old.items():
            signal.signal(s, h)
    report: dict[str, Any] = {"ok": True, "pid": os.getpid(), "queue": qworker is not None}
    if qworker is not None:
        report.update(qworker.report())
    ctx.emit(report, lambda: f"worker stopped: {report}")
    return 0
