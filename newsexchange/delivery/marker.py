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
    """Records accepted messages as ``sent`` as they come in, from a thread of its own.

    The mailer's threads only queue (delivery id, provider id) and go on to the next
    message; this thread commits whatever has queued up in one short transaction (a group
    commit), usually one to a few rows, within a millisecond or so of the server's "250".
    That gap is the whole of the unavoidable window, and it costs the SMTP connections
    nothing.
    """

    def __init__(self, db: Database, now: datetime) -> None:
        self.engine = db.engine
        self.now = now
        self.queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.marked: set[int] = set()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def mark(self, delivery_id: int, provider_id: str | None) -> Callable[[], object]:
        """Queue a row to mark; returns a wait for its commit (see :data:`mail.OnSent`)."""
        done = threading.Event()
        self.queue.put((delivery_id, provider_id, done))
        return functools.partial(done.wait, 30.0)

    def _next_batch(self) -> tuple[list[_Item], bool]:
        """Everything queued now (waiting for the first); True when ``close`` asked to stop."""
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
        with self.engine.connect() as conn:
            stop = False
            while not stop:
                batch, stop = self._next_batch()
                if not batch:
                    continue
                try:
                    queries.mark_sent(conn, [(d, p) for d, p, _e in batch], now=self.now)
                    conn.commit()
                    self.marked.update(d for d, _p, _e in batch)
                except Exception as exc:  # reported by close(); rows stay claimed
                    self.error = exc
                    conn.rollback()
                finally:
                    for _d, _p, event in batch:
                        event.set()

    def close(self) -> None:
        """Wait until everything queued is committed (idempotent)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
