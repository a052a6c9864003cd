"""The SQL of the delivery step: the outbox rows (claim, mark, count, hand back), the digests
it sends, and the provider events it has applied. Plain values in; rows or values out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    distinct,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsexchange.db.tables import (
    Contact,
    Delivery,
    Digest,
    ListMembership,
    ProviderEvent,
    Suppression,
    UTCDateTime,
)

__all__ = [
    "OPEN_STATUSES",
    "by_ids",
    "by_provider_id",
    "claimable",
    "claimed_by",
    "claimed_by_others",
    "claims_in_range",
    "contact_names",
    "count_for_digest",
    "digests_in",
    "emails_of_digest",
    "for_email",
    "insert_new",
    "mark_sent",
    "members_of_lists",
    "open_buckets",
    "recipient_count",
    "record_event",
    "remaining",
    "renew_claims",
    "suppressions_for_lists",
]

#: A delivery in one of these is not finished: the send step will still take it.
OPEN_STATUSES = ("pending", "retrying", "claimed")


def digests_in(session: Session, states: Iterable[str]) -> list[Digest]:
    """Digests in any of ``states``, oldest first."""
    stmt = select(Digest).where(Digest.state.in_(list(states))).order_by(Digest.id)
    return list(session.scalars(stmt))


def remaining(session: Session, digest_id: int) -> int:
    """How many deliveries of a digest are not finished (see :data:`OPEN_STATUSES`)."""
    stmt = (
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.digest_id == digest_id, Delivery.status.in_(OPEN_STATUSES))
    )
    return int(session.scalar(stmt) or 0)


def claimed_by_others(
    session: Session, digest_id: int, worker: str
) -> list[tuple[int, str | None]]:
    """(id, claimed_by) of a digest's rows claimed by anyone but ``worker``."""
    stmt = select(Delivery.id, Delivery.claimed_by).where(
        Delivery.digest_id == digest_id,
        Delivery.status == "claimed",
        Delivery.claimed_by != worker,
    )
    return [(did, by) for did, by in session.execute(stmt)]


def claims_in_range(
    session: Session, digest_id: int, worker: str, id_range: tuple[int, int]
) -> tuple[int, datetime | None]:
    """(how many, the oldest claim time) of a shard's rows claimed by anyone but ``worker``:
    what a shard's run waits out before it may take them as stale."""
    stmt = select(func.count(), func.min(Delivery.claimed_at)).where(
        Delivery.digest_id == digest_id,
        Delivery.status == "claimed",
        Delivery.claimed_by != worker,
        Delivery.id.between(*id_range),
    )
    n, oldest = session.execute(stmt).one()
    if oldest is not None and oldest.tzinfo is None:  # an aggregate skips the column's type
        oldest = oldest.replace(tzinfo=UTC)
    return int(n or 0), oldest


def claimable(
    session: Session,
    digest_id: int,
    *,
    now: datetime,
    stale_before: datetime,
    also: Sequence[int] = (),
    limit: int,
    id_range: tuple[int, int] | None = None,
) -> list[Delivery]:
    """Up to ``limit`` rows of a digest that may be claimed now: due (pending, or a retry
    whose time has come), claimed before ``stale_before`` (the lease ran out), or named in
    ``also`` (claims of dead processes). Locked ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
    concurrent senders split the rows instead of waiting; SQLite serializes writers."""
    due = and_(
        Delivery.status.in_(("pending", "retrying")),
        or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
    )
    stale = and_(Delivery.status == "claimed", Delivery.claimed_at < stale_before)
    cond = or_(due, stale, Delivery.id.in_(list(also))) if also else or_(due, stale)
    if id_range is not None:  # one shard (delivery/shards.py)
        cond = and_(cond, Delivery.id.between(*id_range))
    stmt = (
        select(Delivery)
        .where(Delivery.digest_id == digest_id, cond)
        .order_by(Delivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def open_buckets(session: Session, digest_id: int, size: int) -> list[tuple[int, int]]:
    """(bucket, open rows) of a digest's deliveries cut into fixed id buckets of ``size``
    counted from its first delivery's id: bucket ``k`` holds ids ``first + k*size`` to
    ``first + (k+1)*size - 1``, so a shard keeps its bounds however its rows progress. Only
    buckets with open rows are listed."""
    first = session.scalar(select(func.min(Delivery.id)).where(Delivery.digest_id == digest_id))
    if first is None:
        return []
    bucket = ((Delivery.id - first) // size).label("bucket")  # integer division on both
    stmt = (
        select(bucket, func.count())
        .where(Delivery.digest_id == digest_id, Delivery.status.in_(OPEN_STATUSES))
        .group_by(bucket)
        .order_by(bucket)
    )
    return [(int(k) * size + first, int(n)) for k, n in session.execute(stmt)]


def by_ids(session: Session, ids: Sequence[int]) -> list[Delivery]:
    """The rows with these ids, by id."""
    stmt = select(Delivery).where(Delivery.id.in_(list(ids))).order_by(Delivery.id)
    return list(session.scalars(stmt))


def claimed_by(session: Session, worker: str) -> list[Delivery]:
    """Every row ``worker`` still has claimed."""
    stmt = select(Delivery).where(Delivery.claimed_by == worker, Delivery.status == "claimed")
    return list(session.scalars(stmt))


def renew_claims(session: Session, worker: str, *, now: datetime) -> int:
    """Stamp every row ``worker`` still has claimed with ``now`` (its heartbeat), so that no
    other sender takes them as stale while this one is still working through them.

    On PostgreSQL the rows are taken ``FOR UPDATE SKIP LOCKED``: a row locked right now is
    being marked sent (or handed back) by this worker's own writer and needs no renewal.
    Waiting for it instead, with the rows already renewed locked, deadlocked against the
    writer marking two rows in the other order (its transaction was then aborted, and the
    chunk's results with it); a skipped row still claimed is renewed at the next beat."""
    mine = and_(Delivery.claimed_by == worker, Delivery.status == "claimed")
    if session.get_bind().dialect.name == "postgresql":
        locked = (
            select(Delivery.id)
            .where(mine)
            .order_by(Delivery.id)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = update(Delivery).where(Delivery.id.in_(locked)).values(claimed_at=now)
    else:  # SQLite: one writer at a time, nothing to lock against
        stmt = update(Delivery).where(mine).values(claimed_at=now)
    return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def contact_names(session: Session, contact_ids: Sequence[int]) -> dict[int, str]:
    """Contact id → name, for the To: of each copy."""
    stmt = select(Contact.id, Contact.name).where(Contact.id.in_(list(contact_ids)))
    return {cid: name for cid, name in session.execute(stmt)}


_MARK_SENT = (
    update(Delivery)
    .where(Delivery.id == bindparam("did"), Delivery.status == "claimed")
    .values(
        status="sent",
        sent_at=bindparam("now"),
        provider_message_id=bindparam("pid"),
        claimed_by=None,
        claimed_at=None,
        last_error=None,
        next_attempt_at=None,
    )
)


# PostgreSQL: the whole group in one statement (one round trip; in autocommit it is its own
# transaction, so BEGIN and COMMIT cost no round trips of their own).
_PG_MARK_SENT = text(
    "UPDATE deliveries SET status = 'sent', sent_at = :now, provider_message_id = v.pid, "
    "claimed_by = NULL, claimed_at = NULL, last_error = NULL, next_attempt_at = NULL "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:pids AS text[])) AS v(id, pid) "
    "WHERE deliveries.id = v.id AND deliveries.status = 'claimed'"
).bindparams(bindparam("now", type_=UTCDateTime()))


def mark_sent(
    conn: Connection, accepted: Sequence[tuple[int, str | None]], *, now: datetime
) -> None:
    """Mark (delivery id, provider id) pairs sent, if still claimed: one statement on
    PostgreSQL, one executemany on SQLite; not committed (the caller's group commit, or
    the caller's autocommit connection). Rows are taken in id order (see
    :func:`renew_claims` for why the order matters)."""
    rows = sorted(accepted, key=lambda pair: pair[0])
    if conn.dialect.name == "postgresql":
        ids, pids = [d for d, _p in rows], [p for _d, p in rows]
        conn.execute(_PG_MARK_SENT, {"now": now, "ids": ids, "pids": pids})
        return
    conn.execute(_MARK_SENT, [{"did": d, "now": now, "pid": p} for d, p in rows])


def emails_of_digest(session: Session, digest_id: int) -> set[str]:
    """The addresses (lowercased) a digest already has a delivery for."""
    stmt = select(Delivery.email).where(Delivery.digest_id == digest_id)
    return {e.lower() for e in session.scalars(stmt)}


def insert_new(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert delivery rows, skipping any whose (digest_id, email) exists already.

    One Core executemany on the table (not the ORM's bulk path, which builds an object per
    row): 100,000 rows in a few seconds; the driver batches the statement itself."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    table = cast(Table, Delivery.__table__)
    # ON CONFLICT DO NOTHING: a concurrent enqueue (two workers planning the same digest)
    # cannot make a second row for the same address; the unique (digest_id, email) decides.
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - other databases are not supported yet
        stmt = insert(table)
    session.execute(stmt, list(rows))


def members_of_lists(session: Session, list_ids: Sequence[str]) -> list[tuple[int, str, str]]:
    """(contact id, email, list id) of every member of any of ``list_ids``, by contact id:
    a digest's candidate recipients in one query."""
    stmt = (
        select(Contact.id, Contact.email, ListMembership.list_id)
        .join(ListMembership, ListMembership.contact_id == Contact.id)
        .where(ListMembership.list_id.in_(list(list_ids)))
        .order_by(Contact.id)
    )
    return [(cid, email, lid) for cid, email, lid in session.execute(stmt)]


def suppressions_for_lists(
    session: Session, list_ids: Sequence[str]
) -> list[tuple[str, str | None]]:
    """(stored email or hash, list id or None) of every suppression that can block a member
    of ``list_ids``: the global ones and those of these lists."""
    stmt = select(Suppression.email, Suppression.list_id).where(
        or_(Suppression.list_id.is_(None), Suppression.list_id.in_(list(list_ids)))
    )
    return [(e, lid) for e, lid in session.execute(stmt)]


def recipient_count(session: Session, list_ids: Sequence[str]) -> int:
    """How many distinct addresses are on any of ``list_ids`` and not suppressed (globally
    or for the list they are on): one aggregate query, cheap on a 100,000-contact list, for
    what the approval page announces. Suppressions kept only as a hash (erased addresses)
    have no contact left to count, so they are not looked up here."""
    if not list_ids:
        return 0
    blocked = exists().where(
        Suppression.email == func.lower(Contact.email),
        or_(Suppression.list_id.is_(None), Suppression.list_id == ListMembership.list_id),
    )
    stmt = (
        select(func.count(distinct(func.lower(Contact.email))))
        .select_from(Contact)
        .join(ListMembership, ListMembership.contact_id == Contact.id)
        .where(ListMembership.list_id.in_(list(list_ids)), ~blocked)
    )
    return int(session.scalar(stmt) or 0)


def count_for_digest(session: Session, digest_id: int) -> int:
    stmt = select(func.count()).select_from(Delivery).where(Delivery.digest_id == digest_id)
    return int(session.scalar(stmt) or 0)


def for_email(session: Session, email: str) -> list[Delivery]:
    """Every delivery to one (stored, lowercased) address, by id."""
    stmt = select(Delivery).where(Delivery.email == email).order_by(Delivery.id)
    return list(session.scalars(stmt))


def by_provider_id(session: Session, provider_id: str, email: str) -> Delivery | None:
    stmt = select(Delivery).where(
        Delivery.provider_message_id == provider_id, Delivery.email == email
    )
    return session.scalar(stmt)


def record_event(session: Session, event_id: str, kind: str, *, now: datetime) -> bool:
    """Keep a provider event's id; False when it was already kept (a retry, or the same
    event arriving twice at once), so each event is applied once."""
    if session.get(ProviderEvent, event_id) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(ProviderEvent(id=event_id[:255], kind=kind[:40], received_at=now))
            session.flush()
    except IntegrityError:
        return False
    return True
