"""One pacer: at most ``rate`` units per second, for a mail relay or a translation API."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Pacer"]


class Pacer:
    """Spaces work so that, on average, no more than ``rate`` units go out per second.

    ``wait(n)`` blocks until the next ``n`` units may start and books them. Idle time is not
    saved up: after a pause the next unit goes at once, but never a burst to catch up.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self._next = clock()

    def wait(self, n: int = 1) -> float:
        """Sleep until the next ``n`` units may go; returns the seconds slept."""
        now = self.clock()
        due = max(self._next, now)
        slept = 0.0
        if due > now:
            slept = due - now
            self.sleep(slept)
        self._next = due + n / self.rate
        return slept
