"""What a send result means for its delivery row, and whose claim may be taken over (pure).

Does not touch the database or the network: given a :class:`~newsexchange.mail.SendResult`
and how often the row was tried, :func:`next_state` says what the row becomes; the outbox
(:mod:`.outbox`) writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from newsexchange.common.leases import owner_is_dead
from newsexchange.common.retry import Backoff
from newsexchange.mail import SendResult

__all__ = [
    "BACKOFF",
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "MAX_ATTEMPTS",
    "Outcome",
    "backoff",
    "claim_is_orphaned",
    "next_state",
]

MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(minutes=2)
BACKOFF_MAX = timedelta(hours=6)
#: 2 min after the first failure, doubling, at most 6 h; a relay's Retry-After is honoured in
#: full (``cap_retry_after=False``): coming back earlier than it asked only fails again.
BACKOFF = Backoff(
    base=BACKOFF_BASE.total_seconds(), cap=BACKOFF_MAX.total_seconds(), cap_retry_after=False
)


def backoff(attempts: int, retry_after: float | None) -> timedelta:
    """How long a delivery waits after its ``attempts``-th failure."""
    return timedelta(seconds=BACKOFF.delay(attempts, retry_after))


@dataclass(frozen=True)
class Outcome:
    """The row after one attempt: its status, error and next try; ``suppress`` when the
    recipient's address itself was refused (a hard bounce)."""

    status: str  # sent | failed | retrying
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    suppress: bool = False


def next_state(result: SendResult, *, attempts: int, now: datetime) -> Outcome:
    """Sent; failed for good (a permanent refusal, or the last of :data:`MAX_ATTEMPTS`); or
    retrying after :func:`backoff`."""
    if result.ok:
        return Outcome("sent")
    error = (result.error or "failed")[:2000]
    if result.permanent or attempts >= MAX_ATTEMPTS:
        if not result.permanent:
            error = f"gave up after {attempts} attempts: {error}"
        return Outcome("failed", error, suppress=result.bounce)
    return Outcome("retrying", error, now + backoff(attempts, result.retry_after))


def claim_is_orphaned(claimed_by: str | None) -> bool:
    """A claim anyone may take at once: it names no one, or a local process that is gone (a
    crash, ``kill -9``), instead of waiting for its lease to run out."""
    return not claimed_by or owner_is_dead(claimed_by)
