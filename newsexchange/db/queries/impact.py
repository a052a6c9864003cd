"""The SQL of the impact step (:mod:`newsexchange.impact`): sent digests in the pick-up window,
the receiving side's items published after them, the ``pickups`` rows, and the counts an
impact report is made of (deliveries, suppressions, clicks). Plain values in; rows out.

``clicks_of`` / ``total_clicks`` read ``story_clicks`` here until the click redirect's own
``db/queries/clicks.py`` lands; then the report may call either (same signatures).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsexchange.db.tables import (
    Delivery,
    Digest,
    Item,
    Pickup,
    Suppression,
)

__all__ = [
    "CANDIDATE_CHUNK",
    "CandidateRow",
    "candidates",
    "deliveries_of",
    "digest_by_id",
    "exchange_digests_sent",
    "existing_pickups",
    "insert_pickups",
    "items_by_id",
    "later_sends",
    "pickup_by_id",
    "pickups_of",
    "sent_digests",
    "suppressions_of",
]

#: Candidates are read in pages of this many rows, so a run over 50,000 receiving-side items
#: never holds them all as ORM objects at once.
CANDIDATE_CHUNK = 1000


def digest_by_id(session: Session, digest_id: int) -> Digest | None:
    return session.get(Digest, digest_id)


def sent_digests(session: Session, *, since: datetime) -> list[Digest]:
    """Digests in state ``sent`` whose ``sent_at`` is at or after ``since``, oldest first."""
    return list(
        session.scalars(
            select(Digest)
            .where(Digest.state == "sent", Digest.sent_at.is_not(None), Digest.sent_at >= since)
            .order_by(Digest.sent_at, Digest.id)
        ).all()
    )


def exchange_digests_sent(
    session: Session, exchange_id: str, *, start: datetime, end: datetime
) -> list[Digest]:
    """The exchange's sent digests with ``start <= sent_at < end``, oldest first."""
    return list(
        session.scalars(
            select(Digest)
            .where(
                Digest.exchange_id == exchange_id,
                Digest.state == "sent",
                Digest.sent_at >= start,
                Digest.sent_at < end,
            )
            .order_by(Digest.sent_at, Digest.id)
        ).all()
    )


def items_by_id(session: Session, ids: Collection[int]) -> dict[int, Item]:
    if not ids:
        return {}
    rows = session.scalars(select(Item).where(Item.id.in_(sorted(ids)))).all()
    return {r.id: r for r in rows}


class CandidateRow(NamedTuple):
    """What the matcher needs of a receiving-side item (no ORM object, no translations)."""

    id: int
    region: str
    language: str
    title: str
    summary_text: str
    published_at: datetime


def candidates(
    session: Session, regions: Collection[str], *, start: datetime, end: datetime
) -> Iterator[list[CandidateRow]]:
    """Items of ``regions`` with ``start <= published_at < end``, in pages of
    :data:`CANDIDATE_CHUNK` (keyset by id, so a page costs the same wherever it starts), as
    plain rows: 50,000 items never become 50,000 ORM objects with their translations."""
    if not regions:
        return
    last = 0
    while True:
        rows = session.execute(
            select(
                Item.id,
                Item.region,
                Item.language,
                Item.title,
                Item.summary_text,
                Item.published_at,
            )
            .where(
                Item.region.in_(sorted(regions)),
                Item.published_at >= start,
                Item.published_at < end,
                Item.id > last,
            )
            .order_by(Item.id)
            .limit(CANDIDATE_CHUNK)
        ).all()
        if not rows:
            return
        page = [CandidateRow(*r) for r in rows]
        yield page
        last = page[-1].id


def existing_pickups(session: Session, digest_ids: Collection[int]) -> set[tuple[int, int, int]]:
    """(digest_id, story_item_id, item_id) of every pick-up row already there (any status)."""
    if not digest_ids:
        return set()
    rows = session.execute(
        select(Pickup.digest_id, Pickup.story_item_id, Pickup.item_id).where(
            Pickup.digest_id.in_(sorted(digest_ids))
        )
    ).all()
    return {(a, b, c) for a, b, c in rows}


def insert_pickups(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``pickups`` rows, skipping any whose (digest, story, item) exists already: a
    console ``impact`` and the service at once cannot make a second row, nor fail over it,
    and an editor's decision on the existing row is left as it is."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    keys = ["digest_id", "story_item_id", "item_id"]
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(Pickup).on_conflict_do_nothing(index_elements=keys)
    elif dialect == "sqlite":
        stmt = sqlite.insert(Pickup).on_conflict_do_nothing(index_elements=keys)
    else:  # pragma: no cover - other databases are not supported
        stmt = insert(Pickup)
    session.execute(stmt, list(rows))


def pickup_by_id(session: Session, pickup_id: int) -> Pickup | None:
    return session.get(Pickup, pickup_id)


def pickups_of(
    session: Session, digest_ids: Collection[int], *, statuses: Collection[str] | None = None
) -> list[tuple[Pickup, Item]]:
    """The digests' pick-ups with the items that retell, best score first."""
    if not digest_ids:
        return []
    query = (
        select(Pickup, Item)
        .join(Item, Item.id == Pickup.item_id)
        .where(Pickup.digest_id.in_(sorted(digest_ids)))
    )
    if statuses is not None:
        query = query.where(Pickup.status.in_(sorted(statuses)))
    query = query.order_by(Pickup.digest_id, Pickup.score.desc(), Pickup.id)
    return [(p, i) for p, i in session.execute(query).all()]


def deliveries_of(
    session: Session, digest_id: int
) -> list[tuple[str, str, str, datetime | None, str | None]]:
    """(email, list_id, status, sent_at, last_error) of every delivery of the digest."""
    rows = session.execute(
        select(
            Delivery.email, Delivery.list_id, Delivery.status, Delivery.sent_at, Delivery.last_error
        ).where(Delivery.digest_id == digest_id)
    ).all()
    return [(e, li, st, at, err) for e, li, st, at, err in rows]


def suppressions_of(
    session: Session, emails: Collection[str], reasons: Collection[str]
) -> list[Suppression]:
    """The suppressions of ``emails`` for ``reasons`` (any list)."""
    out: list[Suppression] = []
    ordered = sorted(emails)
    for i in range(0, len(ordered), CANDIDATE_CHUNK):
        out.extend(
            session.scalars(
                select(Suppression).where(
                    Suppression.email.in_(ordered[i : i + CANDIDATE_CHUNK]),
                    Suppression.reason.in_(sorted(reasons)),
                )
            ).all()
        )
    return out


def later_sends(
    session: Session, emails: Collection[str], *, after: datetime
) -> dict[str, list[datetime]]:
    """When each of ``emails`` was sent a digest after ``after`` (any digest): a complaint is
    put down to the last digest the address got before it, so these are what may take it."""
    out: dict[str, list[datetime]] = {}
    ordered = sorted(emails)
    for i in range(0, len(ordered), CANDIDATE_CHUNK):
        rows = session.execute(
            select(Delivery.email, Delivery.sent_at).where(
                Delivery.email.in_(ordered[i : i + CANDIDATE_CHUNK]),
                Delivery.sent_at.is_not(None),
                Delivery.sent_at > after,
            )
        ).all()
        for email, at in rows:
            if at is not None:
                out.setdefault(email, []).append(at)
    return out
