"""The ``locks`` table: the SQL of a lease (acquire, take over, renew, release).

Each statement is one atomic step on SQLite and PostgreSQL; the policy that strings them
together (free → ours, none → insert, dead holder → take over) is
:func:`newsexchange.common.leases.acquire_lock`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from newsexchange.db.engine import Database
from newsexchange.db.tables import Lock

__all__ = ["holder", "insert_lock", "release", "renew", "take_free", "take_from"]


def take_free(db: Database, name: str, owner: str, *, expires: datetime, now: datetime) -> bool:
    """Take ``name`` when it is free (expired) or already ours; True when the UPDATE did."""
    with db.session() as s:
        res = s.execute(
            update(Lock)
            .where(Lock.name == name, (Lock.expires_at < now) | (Lock.owner == owner))
            .values(owner=owner, expires_at=expires)
        )
        return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def insert_lock(db: Database, name: str, owner: str, *, expires: datetime) -> bool:
    """Create the row of ``name``; the primary key lets exactly one writer win."""
    try:
        with db.session() as s:
            s.execute(insert(Lock).values(name=name, owner=owner, expires_at=expires))
        return True
    except IntegrityError:
        return False


def holder(db: Database, name: str) -> str | None:
    """Who holds ``name`` now (expired or not), or None when no row exists."""
    with db.session() as s:
        return s.scalar(select(Lock.owner).where(Lock.name == name))


def take_from(db: Database, name: str, old_owner: str, owner: str, *, expires: datetime) -> bool:
    """Take ``name`` over from ``old_owner``; naming the old owner in the UPDATE means two
    processes taking over from the same dead one cannot both win."""
    with db.session() as s:
        res = s.execute(
            update(Lock)
            .where(Lock.name == name, Lock.owner == old_owner)
            .values(owner=owner, expires_at=expires)
        )
        return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def renew(db: Database, name: str, owner: str, *, expires: datetime) -> bool:
    """Move our lease's expiry to ``expires``; False when the lease is no longer ours."""
    with db.session() as s:
        res = s.execute(
            update(Lock).where(Lock.name == name, Lock.owner == owner).values(expires_at=expires)
        )
        return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def release(db: Database, name: str, owner: str) -> None:
    with db.session() as s:
        s.execute(delete(Lock).where(Lock.name == name, Lock.owner == owner))
