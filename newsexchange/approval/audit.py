"""The audit log: who did what to which digest, when, by which channel, from which address.

Every approval action writes one :class:`~newsexchange.db.AuditEntry` in the same transaction
as the change it records, so the log never claims something that was rolled back. Refused
attempts (a reply from a non-editor, a replayed link) are logged too: they are what an
operator looks for when something odd happened.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from newsexchange.db import AuditEntry, Session
from newsexchange.db.queries import audit as audit_log

__all__ = ["audit", "audit_entries"]


def audit(
    session: Session,
    *,
    digest_id: int | None,
    actor: str,
    action: str,
    channel: str,
    address: str | None,
    now: datetime,
    **detail: Any,
) -> AuditEntry:
    entry = AuditEntry(
        at=now,
        digest_id=digest_id,
        actor=actor[:320],
        action=action[:60],
        channel=channel[:20],
        address=(address or None) and address[:320],
        detail={k: v for k, v in detail.items() if v is not None},
    )
    session.add(entry)
    return entry


def audit_entries(session: Session, digest_id: int) -> list[dict[str, Any]]:
    """The audit log of one digest, oldest first, as plain dicts (``digest show`` prints it)."""
    return [
        {
            "at": r.at.isoformat(),
            "actor": r.actor,
            "action": r.action,
            "channel": r.channel,
            "address": r.address,
            "detail": r.detail or {},
        }
        for r in audit_log.entries(session, digest_id)
    ]
