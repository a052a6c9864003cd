"""The SQL of the approval step: editors' decisions, reply tokens, used links, the digests the
approval step works on, and what the review page shows of a digest that went out."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsexchange.db.tables import Approval, Delivery, Digest, Suppression, UsedToken

__all__ = [
    "IntegrityError",
    "delivery_counts",
    "delivery_emails",
    "digests_by_token_prefix",
    "digests_in_states",
    "is_used",
    "latest_decisions",
    "lock_digest",
    "suppressions_since",
]


def lock_digest(session: Session, digest: Digest) -> None:
    """Take the digest's row lock and re-read it, so two editors deciding at the same moment
    each see the other's approval (PostgreSQL: SELECT … FOR UPDATE; SQLite's write
    transactions are serialized already by BEGIN IMMEDIATE)."""
    session.refresh(digest, with_for_update=True)


def latest_decisions(session: Session, digest_id: int, version: int) -> dict[str, str]:
    """Each editor's latest decision on ``version`` of the digest."""
    rows = session.scalars(
        select(Approval)
        .where(Approval.digest_id == digest_id, Approval.digest_version == version)
        .order_by(Approval.created_at, Approval.id)
    ).all()
    out: dict[str, str] = {}
    for r in rows:
        out[r.editor] = r.decision
    return out


def digests_by_token_prefix(session: Session, prefix: str, length: int) -> list[Digest]:
    """Digests whose reply token starts with ``prefix`` (``length`` characters, any case)."""
    return list(
        session.scalars(
            select(Digest).where(func.lower(func.substr(Digest.token, 1, length)) == prefix)
        ).all()
    )


def is_used(session: Session, jti: str) -> bool:
    return session.get(UsedToken, jti) is not None


def digests_in_states(session: Session, states: Collection[str]) -> list[tuple[int, str, str]]:
    """(id, state, exchange id) of every digest in one of ``states``."""
    rows = session.execute(
        select(Digest.id, Digest.state, Digest.exchange_id).where(Digest.state.in_(tuple(states)))
    ).all()
    return [(int(i), str(s), str(x)) for i, s, x in rows]


def delivery_counts(session: Session, digest_id: int) -> dict[str, int]:
    """The digest's deliveries by status."""
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.digest_id == digest_id)
        .group_by(Delivery.status)
    ).all()
    return {str(st): int(n) for st, n in rows}


def delivery_emails(session: Session, digest_id: int) -> set[str]:
    """The addresses the digest was (or is being) delivered to, lowercased."""
    return {
        e.lower()
        for e in session.scalars(select(Delivery.email).where(Delivery.digest_id == digest_id))
    }


def suppressions_since(session: Session, since: datetime) -> list[Suppression]:
    return list(session.scalars(select(Suppression).where(Suppression.created_at >= since)).all())
