"""The SQL of the audit log (:mod:`newsexchange.approval.audit` writes the entries)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsexchange.db.tables import AuditEntry

__all__ = ["entries", "latest", "recent"]


def entries(
    session: Session, digest_id: int, *, actions: Collection[str] | None = None
) -> list[AuditEntry]:
    """The digest's entries (only ``actions``, when given), oldest first."""
    query = select(AuditEntry).where(AuditEntry.digest_id == digest_id)
    if actions is not None:
        query = query.where(AuditEntry.action.in_(tuple(actions)))
    return list(session.scalars(query.order_by(AuditEntry.at, AuditEntry.id)).all())


def latest(session: Session, digest_id: int, actions: Collection[str]) -> AuditEntry | None:
    """The digest's newest entry of one of ``actions``."""
    return session.scalars(
        select(AuditEntry)
        .where(AuditEntry.digest_id == digest_id, AuditEntry.action.in_(tuple(actions)))
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(1)
    ).first()


def recent(
    session: Session, digest_id: int, *, action: str, actor: str, since: datetime
) -> list[AuditEntry]:
    """The digest's ``action`` entries by ``actor`` after ``since``."""
    return list(
        session.scalars(
            select(AuditEntry).where(
                AuditEntry.digest_id == digest_id,
                AuditEntry.action == action,
                AuditEntry.actor == actor,
                AuditEntry.at > since,
            )
        ).all()
    )
