"""The SQL of the mail queue (:class:`~newsexchange.db.tables.QueuedMail`): add a row in the
caller's transaction, list what is due, claim a row (a conditional UPDATE, so two processes
never send it twice), record how the send went."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from newsexchange.db.tables import QueuedMail

__all__ = ["add", "claim", "due", "get", "mark_failed", "mark_retry", "mark_sent", "prune_sent"]


def add(
    session: Session,
    *,
    kind: str,
    recipient: str,
    message: str,
    message_id: str | None,
    digest_id: int | None,
    now: datetime,
) -> QueuedMail:
    row = QueuedMail(
        kind=kind,
        recipient=recipient,
        message=message,
        message_id=message_id,
        digest_id=digest_id,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    return row


def due(session: Session, *, now: datetime, limit: int) -> list[tuple[int, int]]:
    """(id, attempts) of the pending rows whose time has come, oldest first."""
    rows = session.execute(
        select(QueuedMail.id, QueuedMail.attempts)
        .where(QueuedMail.status == "pending", QueuedMail.next_attempt_at <= now)
        .order_by(QueuedMail.next_attempt_at, QueuedMail.id)
        .limit(limit)
    ).all()
    return [(int(i), int(a)) for i, a in rows]


def claim(session: Session, row_id: int, *, attempts: int, now: datetime, until: datetime) -> bool:
    """Take the row for one send attempt: only if it is still pending, due and untouched since
    it was listed (``attempts``). It is not due again before ``until``, so a process that dies
    while sending leaves it to be retried then, not lost."""
    result = session.execute(
        update(QueuedMail)
        .where(
            QueuedMail.id == row_id,
            QueuedMail.status == "pending",
            QueuedMail.attempts == attempts,
            QueuedMail.next_attempt_at <= now,
        )
        .values(attempts=attempts + 1, next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def get(session: Session, row_id: int) -> QueuedMail | None:
    return session.get(QueuedMail, row_id)


def mark_sent(session: Session, row_id: int, *, now: datetime) -> None:
    session.execute(
        update(QueuedMail)
        .where(QueuedMail.id == row_id)
        .values(status="sent", sent_at=now, last_error=None)
        .execution_options(synchronize_session=False)
    )


def mark_retry(session: Session, row_id: int, *, at: datetime, error: str) -> None:
    session.execute(
        update(QueuedMail)
        .where(QueuedMail.id == row_id)
        .values(next_attempt_at=at, last_error=error[:2000])
        .execution_options(synchronize_session=False)
    )


def mark_failed(session: Session, row_id: int, *, error: str) -> None:
    session.execute(
        update(QueuedMail)
        .where(QueuedMail.id == row_id)
        .values(status="failed", last_error=error[:2000])
        .execution_options(synchronize_session=False)
    )


def prune_sent(session: Session, *, before: datetime) -> int:
    """Forget system mail sent before ``before`` (its audit entries stay); failed rows are
    kept for an operator to read. Returns how many rows went."""
    res = session.execute(
        delete(QueuedMail).where(QueuedMail.status == "sent", QueuedMail.sent_at < before)
    )
    return int(res.rowcount or 0)  # type: ignore[attr-defined]
