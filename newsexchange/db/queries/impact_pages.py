"""Interim SQL for the impact pages' stand-in (``impact/interim.py``), until
``impact/report.py`` and its queries land at merge; then this module goes with it.

Only what the pages' data shape needs: a digest's stories, their clicks and pick-ups (with
the picked-up item), and the sent digests of an exchange in a date range.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsexchange.db.tables import Digest, DigestItem, Item, Pickup, StoryClicks

__all__ = ["digest_stories", "pickups_with_items", "sent_digests_between", "story_clicks"]


def digest_stories(session: Session, digest_id: int) -> list[tuple[DigestItem, Item]]:
    """The included stories of a digest, in their order."""
    rows = session.execute(
        select(DigestItem, Item)
        .join(Item, Item.id == DigestItem.item_id)
        .where(DigestItem.digest_id == digest_id, DigestItem.included.is_(True))
        .order_by(DigestItem.position, DigestItem.id)
    ).all()
    return [(d, i) for d, i in rows]


def story_clicks(session: Session, digest_id: int) -> list[StoryClicks]:
    return list(session.scalars(select(StoryClicks).where(StoryClicks.digest_id == digest_id)))


def pickups_with_items(session: Session, digest_id: int) -> list[tuple[Pickup, Item]]:
    """The digest's pick-ups (every status), best score first, with the picked-up item."""
    rows = session.execute(
        select(Pickup, Item)
        .join(Item, Item.id == Pickup.item_id)
        .where(Pickup.digest_id == digest_id)
        .order_by(Pickup.score.desc(), Pickup.id)
    ).all()
    return [(p, i) for p, i in rows]


def sent_digests_between(
    session: Session, exchange_id: str, date_from: date, date_to: date
) -> list[Digest]:
    """Sent digests of an exchange whose period starts within [date_from, date_to], oldest
    first."""
    return list(
        session.scalars(
            select(Digest)
            .where(
                Digest.exchange_id == exchange_id,
                Digest.state == "sent",
                Digest.period_start >= date_from,
                Digest.period_start <= date_to,
            )
            .order_by(Digest.period_start, Digest.id)
        )
    )
