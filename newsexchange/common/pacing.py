"""Pacers: at most ``rate`` units per second, for a mail relay or a translation API.

:class:`Pacer` paces one process. :class:`SharedPacer` paces every process that books the
same shared slot (a database row, see ``db/queries/rates.py``): two senders at 50/s on one
relay sent 92/s together with a pacer each (issue 13); with the shared one they send 50/s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Pacer", "Reserve", "SharedPacer"]

#: Books ``seconds`` of a shared budget; returns how long from now until the booking starts.
Reserve = Callable[[float], float]


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


class SharedPacer:
    """A :class:`Pacer` whose budget lives in a shared slot, so that ``rate`` is the rate of
    everyone who books it (every worker on every host), not of this process.

    ``wait(n)`` books ``n / rate`` seconds with one call to ``reserve`` and sleeps until the
    booking starts, then the ``n`` units go. Callers book in blocks (a chunk of at most
    about a second's worth), so the slot is touched a few times per second, not per
    message; a block longer than ``max_block`` seconds is booked in pieces, each slept for,
    so one sender cannot book minutes ahead and starve the others' turn.
    """

    def __init__(
        self,
        rate: float,
        reserve: Reserve,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_block: float = 1.0,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.reserve = reserve
        self.sleep = sleep
        self.max_block = max_block

    def wait(self, n: int = 1) -> float:
        """Sleep until the next ``n`` units may go; returns the seconds slept."""
        slept = 0.0
        left = n / self.rate
        while True:
            block = min(left, self.max_block)
            delay = self.reserve(block)
            if delay > 0:
                self.sleep(delay)
                slept += delay
            left -= block
            if left <= 1e-9:
                return slept
