"""A send run's claims heartbeat: its claims renewed from a thread of its own.

Renewing between chunks only (as before issue 13) tied a claim's life to the slowest chunk:
with a short TTL a chunk on a slow relay lost its claims mid-send, and with a long one a dead
worker's rows waited 10 minutes. The thread renews every ``interval`` (a third of the TTL)
whatever the run is doing, with one UPDATE, so the TTL can be short (30 s) and a worker's
death (kill -9, a lost host) is noticed within it.

Claims are stamped and judged on each run's clock (``now`` moved on by the run's monotonic
time, so tests can drive it), not the database's: hosts must agree on the time to well
within the TTL (NTP keeps them within milliseconds; a host seconds off shortens or lengthens
its claims by as much). The rate limit, which needs one timeline at sub-second precision,
uses PostgreSQL's clock instead (``db/queries/rates.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from newsexchange.db import Database
from newsexchange.db.queries import deliveries as queries

__all__ = ["Heartbeat"]

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews ``worker``'s claims every ``interval`` seconds until :meth:`stop`.

    ``moment`` gives the time the claims are stamped with (the run's clock, the same one
    claims are made and judged stale with). A renewal that fails (the database restarting)
    is logged and tried again at the next beat; the claims then live on until their TTL.
    """

    def __init__(
        self,
        db: Database,
        worker: str,
        *,
        interval: float,
        moment: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.worker = worker
        self.interval = interval
        self.moment = moment
        self.beats = 0  # renewals done (for tests and the log)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {worker}", daemon=True)

    def beat(self) -> int:
        """Renew now; returns how many claims were renewed."""
        with self.db.session() as s:
            n = queries.renew_claims(s, self.worker, now=self.moment())
        self.beats += 1
        return n

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:
                log.warning("claims heartbeat failed", exc_info=True, extra={"worker": self.worker})

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating (idempotent); returns once the thread has ended."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
