"""One back-off and one ``Retry-After`` parser for every step that tries again.

The steps wait on different scales on purpose — a failing source rests for its fetch
interval, doubled; a translation for 5 minutes, doubled; a delivery for 2 minutes, doubled;
an in-run fetch retry for half a second, jittered — so each step keeps its own
:class:`Backoff` *settings*, but the formula is this one.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["Backoff", "parse_retry_after"]


@dataclass(frozen=True)
class Backoff:
    """``base`` seconds after the first failure, doubling after each further one, never more
    than ``cap``; optionally jittered by ±``jitter`` (a fraction) so that many clients that
    failed together do not come back together.

    A server's ``Retry-After`` is honoured when it asks for longer than the formula — up to
    ``cap`` when ``cap_retry_after`` (a provider cannot park us for a week), or in full when
    the caller must not come back earlier (a mail relay's explicit wait).
    """

    base: float
    cap: float
    jitter: float = 0.0
    cap_retry_after: bool = True
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failure in a row (1 for the first)."""
        raw = self.base * 2.0 ** max(0, min(attempts - 1, 30))
        if self.jitter:
            raw *= 1.0 - self.jitter + 2.0 * self.jitter * self.random()
        delay = min(raw, self.cap)
        if retry_after is not None:
            asked = min(retry_after, self.cap) if self.cap_retry_after else retry_after
            delay = max(delay, asked)
        return delay


def parse_retry_after(
    value: str | None, *, now: datetime | None = None, cap: float | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date (RFC 9110
    §10.2.3); ``None`` when absent or unreadable. A date in the past means 0; an HTTP date is
    always GMT, so one without a zone is read as UTC. ``cap`` bounds the answer."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return min(seconds, cap) if cap is not None else seconds
