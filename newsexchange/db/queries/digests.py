"""The SQL of the digest step, its console commands and the public archive.

Each function takes a :class:`Session` and plain values and returns ORM rows or plain
values; the callers (``digest/build.py``, ``digest/content.py``, ``digest/step.py``,
``commands/digest.py``, ``web/archive.py``) decide what to do with them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date, datetime

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsexchange.db.tables import Approval, AuditEntry, Digest, DigestItem, Item

__all__ = [
    "add_digest",
    "approvals_of",
    "audit_of",
    "count_period_items",
    "digest_of_period",
    "digest_state",
    "digests",
    "exchange_digests",
    "included_counts",
    "items_by_id",
    "period_items",
    "race_winner",
]


# -- digests ----------------------------------------------------------------------------------


def _of_period(exchange_id: str, period_start: date) -> Select[Digest]:
    return select(Digest).where(
        Digest.exchange_id == exchange_id, Digest.period_start == period_start
    )


def digest_of_period(session: Session, exchange_id: str, period_start: date) -> Digest | None:
    """The digest of one exchange and period, locked for this transaction.

    FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes writers): two
    rebuilds of one digest run one after the other instead of interleaving their rows.
    """
    stmt = _of_period(exchange_id, period_start).with_for_update()
    return session.scalars(stmt).one_or_none()


def add_digest(session: Session, digest: Digest) -> bool:
    """Add a new digest in a savepoint; False when another build of the same period won the
    race (the unique constraint ``uq_digest_period``): then read :func:`race_winner`."""
    try:
        with session.begin_nested():
            session.add(digest)
    except IntegrityError:
        return False
    return True


def race_winner(session: Session, exchange_id: str, period_start: date) -> Digest:
    """The digest another build of the same period wrote (see :func:`add_digest`)."""
    return session.scalars(_of_period(exchange_id, period_start)).one()


def digest_state(session: Session, exchange_id: str, period_start: date) -> str | None:
    """The state of the period's digest, None when it was never built."""
    return session.scalar(
        select(Digest.state).where(
            Digest.exchange_id == exchange_id, Digest.period_start == period_start
        )
    )


def digests(session: Session, exchange_id: str | None = None) -> list[Digest]:
    """Every digest (of one exchange), newest period first."""
    stmt = select(Digest).order_by(Digest.period_start.desc(), Digest.exchange_id)
    if exchange_id:
        stmt = stmt.where(Digest.exchange_id == exchange_id)
    return list(session.scalars(stmt))


def exchange_digests(
    session: Session, exchange_id: str, *, state: str, limit: int | None = None
) -> list[Digest]:
    """One exchange's digests in ``state``, newest period first, at most ``limit``."""
    q = (
        select(Digest)
        .where(Digest.exchange_id == exchange_id, Digest.state == state)
        .order_by(Digest.period_start.desc())
    )
    if limit:
        q = q.limit(limit)
    return list(session.scalars(q))


def included_counts(session: Session) -> dict[int, int]:
    """Digest id → how many of its items are included (digests without any are absent)."""
    rows = session.execute(
        select(DigestItem.digest_id, func.count())
        .where(DigestItem.included.is_(True))
        .group_by(DigestItem.digest_id)
    ).all()
    return {digest_id: count for digest_id, count in rows}


def approvals_of(session: Session, digest_id: int) -> list[Approval]:
    """A digest's approval decisions, oldest first."""
    stmt = select(Approval).where(Approval.digest_id == digest_id).order_by(Approval.created_at)
    return list(session.scalars(stmt))


def audit_of(session: Session, digest_id: int) -> list[AuditEntry]:
    """A digest's audit log, oldest first."""
    stmt = (
        select(AuditEntry)
        .where(AuditEntry.digest_id == digest_id)
        .order_by(AuditEntry.at, AuditEntry.id)
    )
    return list(session.scalars(stmt))


# -- the items of a period --------------------------------------------------------------------


def _in_period(
    regions: Iterable[str],
    starts_at: datetime,
    ends_at: datetime,
    events_until: datetime | None,
    *,
    listable: bool,
) -> list[ColumnElement[bool]]:
    """The conditions of a period's candidates (see :func:`period_items`); ``listable``
    leaves out the events that started before the digest's date (they can only be left
    out, so they do not make a period worth building)."""
    published = and_(Item.published_at >= starts_at, Item.published_at < ends_at)
    if events_until is None:
        return [Item.region.in_(list(regions)), published]
    undated = and_(published, Item.event_start.is_(None))
    # An upcoming event counts whenever it was announced, as long as it was known by the
    # digest's date (one announced later is the next digest's, if it is still ahead then).
    upcoming = and_(
        Item.event_start >= ends_at,
        Item.event_start < events_until,
        Item.published_at < ends_at,
    )
    which: list[ColumnElement[bool]] = [undated, upcoming]
    if not listable:
        which.append(and_(published, Item.event_start < ends_at))
    # An event its calendar cancelled (or no longer carries) is nobody's candidate.
    return [Item.region.in_(list(regions)), or_(*which), Item.cancelled_at.is_(None)]


def period_items(
    session: Session,
    regions: Iterable[str],
    starts_at: datetime,
    ends_at: datetime,
    *,
    events_until: datetime | None = None,
) -> list[Item]:
    """The candidates of a period's digest, by id: the items of ``regions`` published in
    [starts_at, ends_at) that are not events; the events starting in [ends_at, events_until)
    (the digest's date up to the end of the next period) published before ``ends_at``;
    and the events published in the period that started before ``ends_at`` (the selection
    leaves them out, saying why). Without ``events_until``: every item published in the
    period, events or not, as before events had a window."""
    conds = _in_period(regions, starts_at, ends_at, events_until, listable=False)
    stmt = select(Item).where(*conds).order_by(Item.id)
    return list(session.scalars(stmt))


def count_period_items(
    session: Session,
    regions: Iterable[str],
    starts_at: datetime,
    ends_at: datetime,
    *,
    events_until: datetime | None = None,
) -> int:
    """How many of :func:`period_items` a digest could list (an event that started before
    the digest's date is not counted: it can only be left out)."""
    conds = _in_period(regions, starts_at, ends_at, events_until, listable=True)
    stmt = select(func.count()).select_from(Item).where(*conds)
    return session.scalar(stmt) or 0


def items_by_id(session: Session, ids: Collection[int]) -> list[Item]:
    """The items with these ids (in no particular order; unknown ids are left out)."""
    return list(session.scalars(select(Item).where(Item.id.in_(ids))))
