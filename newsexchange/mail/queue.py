"""The queue of system mail: approval requests, reminders, acknowledgements, notices.

:func:`enqueue` writes the finished message as a row (``mail_queue``) in the caller's
transaction, so the mail exists exactly when the decision that caused it was committed.
:func:`flush`, called after the commit, sends what is due through the configured mailer:

- each row is *claimed* first (a conditional UPDATE in its own short transaction), so two
  processes flushing at once never send a row twice; no transaction is open while the
  relay is talked to, so a slow relay holds no write lock;
- a temporary failure leaves the row pending for a later flush (:data:`BACKOFF`, honouring
  the relay's Retry-After); the stored bytes are sent again, so the Message-ID stays the
  same across retries;
- a permanent failure (the relay refused the recipient or the message) marks it ``failed``
  with the error, as do :data:`MAX_ATTEMPTS` temporary ones.
"""

from __future__ import annotations

import email
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage

from newsexchange.common.retry import Backoff
from newsexchange.config import Config
from newsexchange.db import Database, Session
from newsexchange.db.queries import mail_queue as rows
from newsexchange.errors import NewsExchangeError
from newsexchange.mail import Mailer, OutgoingMessage, SendResult, get_mailer
from newsexchange.mail.headers import POLICY

__all__ = ["BACKOFF", "CLAIM_LEASE", "MAX_ATTEMPTS", "FlushReport", "enqueue", "flush"]

log = logging.getLogger(__name__)

#: After a temporary failure: a minute, doubling, at most an hour; a relay's explicit
#: Retry-After is waited in full (it asked us not to come back earlier).
BACKOFF = Backoff(base=60.0, cap=3600.0, cap_retry_after=False)
#: Temporary failures in a row after which a mail is given up (about 15 hours of trying).
MAX_ATTEMPTS = 20
#: How long a claimed row stays away from other flushes: a process that dies mid-send
#: leaves its rows to be tried again after this.
CLAIM_LEASE = timedelta(minutes=10)


def enqueue(
    session: Session,
    message: EmailMessage,
    *,
    kind: str,
    recipient: str,
    digest_id: int | None,
    now: datetime,
) -> None:
    """Queue ``message`` (complete, with its Message-ID) for ``recipient``, in the caller's
    transaction."""
    rows.add(
        session,
        kind=kind,
        recipient=recipient,
        # The bytes the old direct send produced (the message's own policy, CRLF for ours).
        message=message.as_bytes().decode("utf-8"),
        message_id=message["Message-ID"],
        digest_id=digest_id,
        now=now,
    )


@dataclass
class FlushReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Claimed:
    id: int
    kind: str
    recipient: str
    raw: bytes
    digest_id: int | None
    attempts: int


def flush(
    db: Database,
    config: Config,
    *,
    now: datetime,
    mailer: Mailer | None = None,
    limit: int = 200,
) -> FlushReport:
    """Send the queued mail that is due; returns what happened. Never raises for a mail that
    could not be sent (it stays queued, or is marked failed): the decision that queued it
    stands either way."""
    report = FlushReport()
    claimed = _claim_due(db, now=now, limit=limit)
    if not claimed:
        return report
    results = _send(config, claimed, mailer)
    with db.session() as session:
        for item, result in zip(claimed, results, strict=True):
            _record(session, item, result, now=now, report=report)
    return report


def _claim_due(db: Database, *, now: datetime, limit: int) -> list[_Claimed]:
    with db.session() as session:
        due = rows.due(session, now=now, limit=limit)
    out: list[_Claimed] = []
    for row_id, attempts in due:
        with db.session() as session:
            if not rows.claim(session, row_id, attempts=attempts, now=now, until=now + CLAIM_LEASE):
                continue  # another process has it
            row = rows.get(session, row_id)
            assert row is not None
            out.append(
                _Claimed(
                    row.id,
                    row.kind,
                    row.recipient,
                    row.message.encode("utf-8"),
                    row.digest_id,
                    attempts + 1,
                )
            )
    return out


def _send(config: Config, claimed: Sequence[_Claimed], mailer: Mailer | None) -> list[SendResult]:
    messages = [
        OutgoingMessage(
            message=email.message_from_bytes(c.raw, policy=POLICY),  # type: ignore[arg-type]
            recipient=c.recipient,
            raw=c.raw,
        )
        for c in claimed
    ]
    own = mailer is None
    try:
        mailer = mailer or get_mailer(config)
        try:
            return list(mailer.send(messages))
        finally:
            if own:
                mailer.close()
    except NewsExchangeError as exc:
        # The backend is unusable now (the relay is down, a key is missing): every mail
        # waits for the next flush, when the operator may have fixed it.
        return [SendResult(False, error=str(exc)) for _ in claimed]


def _record(
    session: Session, item: _Claimed, result: SendResult, *, now: datetime, report: FlushReport
) -> None:
    extra = {"kind": item.kind, "digest": item.digest_id, "attempts": item.attempts}
    if result.ok:
        rows.mark_sent(session, item.id, now=now)
        report.sent += 1
        return
    error = result.error or "not sent"
    report.errors.append(error)
    if result.permanent or item.attempts >= MAX_ATTEMPTS:
        rows.mark_failed(session, item.id, error=error)
        report.failed += 1
        log.error("queued mail failed", extra={**extra, "error": error})
        return
    wait = BACKOFF.delay(item.attempts, result.retry_after)
    rows.mark_retry(session, item.id, at=now + timedelta(seconds=wait), error=error)
    report.retrying += 1
    log.warning("queued mail not sent; will retry", extra={**extra, "error": error})
