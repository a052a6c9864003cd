"""Recording accepted messages as ``sent`` the moment the server accepts them."""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from datetime import datetime

from newsexchange.db import Database
from newsexchange.db.queries import deliveries as queries

__all__ = ["Marker"]

_Item = tuple[int, str | None, threading.Event]


class Marker:
    """Records accepted messages as ``sent`` as they come in, from threads of its own.

    The mailer's threads only queue (delivery id, provider id) and go on to the next
    message; a writer thread commits whatever has queued up in one short transaction (a
    group commit), usually one to a few rows, within a millisecond or so of the server's
    "250". That gap is the whole of the unavoidable window, and it costs the SMTP
    connections nothing as long as the commit is done before the connection's next message
    is ready to be accepted (see ``mail.smtp``: the final "." waits for it).

    On SQLite one writer serves every connection (the file has one writer at a time
    anyway). On PostgreSQL each mailer thread (each SMTP connection) gets a writer and a
    database connection of its own, so the connections' commits run side by side (the
    server flushes concurrent commits together) instead of each connection waiting for the
    others' commits before its own: with a commit of a few milliseconds that wait, not the
    relay, set the pace of every connection.
    """

    def __init__(self, db: Database, now: datetime) -> None:
        self.db = db
        self.now = now
        self.marked: set[int] = set()
        self._per_connection = db.engine.dialect.name == "postgresql"
        self._lock = threading.Lock()
        self._lanes: dict[int, _Lane] = {}

    def _lane(self) -> _Lane:
        key = threading.get_ident() if self._per_connection else 0
        lane = self._lanes.get(key)
        if lane is None:
            with self._lock:
                lane = self._lanes.get(key)
                if lane is None:
                    lane = self._lanes[key] = _Lane(self.db, self.now, self.marked)
        return lane

    def mark(self, delivery_id: int, provider_id: str | None) -> Callable[[], object]:
        """Queue a row to mark; returns a wait for its commit (see :data:`mail.OnSent`)."""
        done = threading.Event()
        self._lane().queue.put((delivery_id, provider_id, done))
        return functools.partial(done.wait, 30.0)

    def close(self) -> None:
        """Wait until everything queued is committed (idempotent); raises the first error
        a writer met (its rows stay claimed)."""
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.stop()
        for lane in lanes:
            if lane.error is not None:
                error, lane.error = lane.error, None
                raise error


class _Lane:
    """One writer: a queue, a thread and a database connection."""

    def __init__(self, db: Database, now: datetime, marked: set[int]) -> None:
        self.engine = db.engine
        self.now = now
        self.marked = marked  # shared by the lanes of one Marker (set.update is atomic)
        self.queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _next_batch(self) -> tuple[list[_Item], bool]:
        """Everything queued now (waiting for the first); True when ``stop`` asked to stop."""
        item = self.queue.get()
        batch: list[_Item] = []
        while item is not None:
            batch.append(item)
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _run(self) -> None:
        # On PostgreSQL the group is one UPDATE in autocommit: its own transaction, durable
        # when it returns (synchronous_commit stays on), in one round trip instead of three
        # (BEGIN, UPDATE, COMMIT).
        conn = self.engine.connect()
        autocommit = self.engine.dialect.name == "postgresql"
        if autocommit:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        with conn:
            stop = False
            while not stop:
                batch, stop = self._next_batch()
                if not batch:
                    continue
                try:
                    queries.mark_sent(conn, [(d, p) for d, p, _e in batch], now=self.now)
                    if not autocommit:
                        conn.commit()
                    self.marked.update(d for d, _p, _e in batch)
                except Exception as exc:  # reported by close(); rows stay claimed
                    self.error = exc
                    conn.rollback()
                finally:
                    for _d, _p, event in batch:
                        event.set()

    def stop(self) -> None:
        """Commit what is queued, then end the thread (idempotent)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
