"""The SQL of click counting: ``story_clicks``, one row per story of a digest, a count and
nothing else (who, when, from where is never stored).

A click is one statement, ``INSERT … ON CONFLICT (digest_id, position) DO UPDATE SET
clicks = story_clicks.clicks + 1`` (PostgreSQL, SQLite ≥ 3.24): the database adds one under
its own row lock, so concurrent clicks on the same story lose none (no read-then-write in
Python).
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from newsexchange.db.tables import Digest, StoryClicks

__all__ = ["clicks_of", "count_click", "digest_state", "total_clicks"]

_COUNT = text(
    "INSERT INTO story_clicks (digest_id, position, item_id, clicks) "
    "VALUES (:digest_id, :position, :item_id, 1) "
    "ON CONFLICT (digest_id, position) DO UPDATE SET clicks = story_clicks.clicks + 1"
)


def digest_state(session: Session, digest_id: int) -> str | None:
    """The digest's state, None when there is no such digest."""
    state = session.scalar(select(Digest.state).where(Digest.id == digest_id))
    return None if state is None else str(state)


def count_click(session: Session, digest_id: int, position: int, item_id: int | None) -> None:
    """One more click on the story at ``position`` of ``digest_id`` (the row is made on the
    first). Caller commits."""
    session.execute(_COUNT, {"digest_id": digest_id, "position": position, "item_id": item_id})


def clicks_of(session: Session, digest_id: int) -> dict[int, int]:
    """Clicks per story position of one digest (stories nobody clicked are absent)."""
    rows = session.execute(
        select(StoryClicks.position, StoryClicks.clicks).where(StoryClicks.digest_id == digest_id)
    )
    return {int(position): int(clicks) for position, clicks in rows}


def total_clicks(session: Session, digest_id: int) -> int:
    """All clicks on one digest's stories."""
    total = session.scalar(
        select(func.coalesce(func.sum(StoryClicks.clicks), 0)).where(
            StoryClicks.digest_id == digest_id
        )
    )
    return int(total or 0)
