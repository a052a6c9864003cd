"""The approval step (``approvals run``, the service's ``approvals`` job): requests for new
drafts, reminders, deadlines; and :func:`request_approval` for one digest.

What is due for each digest is decided by :func:`newsexchange.approval.rules.due` on plain
values; this module loads the digests, applies that, and writes. The mail goes through the
queue: it is flushed at the start of every run (so a relay outage is retried on the next
tick) and after the run's commits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from newsexchange.approval.audit import audit
from newsexchange.approval.content import last_requested_version
from newsexchange.approval.decide import latest_decisions
from newsexchange.approval.notices import notify_operators, send_requests
from newsexchange.approval.rules import due
from newsexchange.config import Config
from newsexchange.db import Database, Digest, Session
from newsexchange.db.queries.approvals import digests_in_states
from newsexchange.digest.states import DigestState, move
from newsexchange.errors import DigestNotFound
from newsexchange.mail.queue import flush

__all__ = ["ApprovalRunReport", "request_approval", "run_approvals"]

#: The logger these messages always came from (operators filter on it).
log = logging.getLogger("newsexchange.approval.notify")

#: The states the approval step looks at.
_STEP_STATES = (DigestState.DRAFT, DigestState.AWAITING_APPROVAL, DigestState.REVISING)


@dataclass
class ApprovalRunReport:
    requested: list[int] = field(default_factory=list)
    reminded: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "requested": self.requested,
            "reminded": self.reminded,
            "held": self.held,
            "rejected": self.rejected,
            "failures": self.failures,
        }


def run_approvals(db: Database, config: Config, *, now: datetime) -> ApprovalRunReport:
    """Requests for new drafts, reminders, deadlines: once, idempotently.

    - a ``draft`` digest gets its approval request (state ``awaiting_approval``);
    - ``reminder_hours`` after the last request, the editors who have not answered the current
      version get one reminder;
    - ``deadline_hours`` after the last request, the digest is held (``on_deadline: hold``,
      the default) or rejected, and the operators are told. It is never sent without
      approval. An edit mails fresh requests, which restarts both clocks.
    Each digest is handled in its own transaction: one failure does not block the others.
    """
    flush(db, config, now=now)  # what an earlier run could not send
    report = ApprovalRunReport()
    with db.session() as session:
        rows = digests_in_states(session, _STEP_STATES)
    known = {e.id for e in config.exchanges}
    for digest_id, state, exchange_id in rows:
        if exchange_id not in known:
            report.failures.append(
                {"digest": digest_id, "error": f"exchange {exchange_id!r} is not in the config"}
            )
            continue
        try:
            with db.session() as session:
                digest = session.get(Digest, digest_id)
                if digest is None or digest.state != state:
                    continue  # changed under us (another process); next run sees it
                _run_one(session, config, digest, now=now, report=report)
        except Exception as exc:  # report and go on with the others
            log.exception("approval step failed", extra={"digest": digest_id})
            report.failures.append({"digest": digest_id, "error": str(exc)})
    flush(db, config, now=now)
    return report


def _run_one(
    session: Session, config: Config, digest: Digest, *, now: datetime, report: ApprovalRunReport
) -> None:
    exchange = config.exchange(digest.exchange_id)
    settings = exchange.approval
    answered = set(latest_decisions(session, digest))
    what = due(
        state=digest.state,
        requested_at=digest.approval_requested_at,
        reminder_sent_at=digest.reminder_sent_at,
        last_requested_version=last_requested_version(session, digest),
        version=digest.version,
        waiting=any(e not in answered for e in exchange.editors),
        reminder_hours=settings.reminder_hours,
        deadline_hours=settings.deadline_hours,
        now=now,
    )
    if what == "deadline":
        _deadline(session, config, digest, now=now, report=report)
    elif what == "request":
        send_requests(session, config, digest, now=now, kind="request")
        report.requested.append(digest.id)
    elif what == "request_changed":
        send_requests(session, config, digest, now=now, kind="changed")
        report.requested.append(digest.id)
    elif what == "remind":
        waiting = [e for e in exchange.editors if e not in answered]
        send_requests(session, config, digest, now=now, kind="reminder", editors=waiting)
        report.reminded.append(digest.id)
    elif what == "nothing_to_remind":
        digest.reminder_sent_at = now  # everyone answered; nothing to remind


def _deadline(
    session: Session, config: Config, digest: Digest, *, now: datetime, report: ApprovalRunReport
) -> None:
    exchange = config.exchange(digest.exchange_id)
    settings = exchange.approval
    approved = sorted(e for e, d in latest_decisions(session, digest).items() if d == "approve")
    if settings.on_deadline == "reject":
        move(digest, "deadline_reject")
        report.rejected.append(digest.id)
    else:
        move(digest, "deadline_hold")
        report.held.append(digest.id)
    digest.decided_reason = (
        f"no approval within {settings.deadline_hours:g} hours "
        f"({len(approved)} of {exchange.approvals_required} approvals)"
    )
    audit(
        session,
        digest_id=digest.id,
        actor="newsexchange",
        action=f"deadline_{digest.state}",
        channel="system",
        address=None,
        now=now,
        version=digest.version,
        approvals=len(approved),
        required=exchange.approvals_required,
    )
    what = "held (not sent)" if digest.state == "held" else "rejected (will not be sent)"
    notify_operators(
        session,
        config,
        now=now,
        digest_id=digest.id,
        subject=f"Digest {digest.id} ({exchange.display_name}) {what}: no approval in time",
        body=(
            f"Digest {digest.id} of {exchange.display_name} (period {digest.period_start} to "
            f"{digest.period_end}, version {digest.version}) was {what}: "
            f"{digest.decided_reason}.\n\n"
            + (
                "An editor can still approve it (the links in the last request, or "
                f"`newsexchange approve {digest.id} --as EDITOR`).\n"
                if digest.state == "held"
                else ""
            )
        ),
    )


def request_approval(db: Database, config: Config, digest_id: int, *, now: datetime) -> int:
    """Mail every editor of the digest's exchange an approval request; state
    awaiting_approval. Returns the number of editors mailed (queued, and sent right after
    the commit; a relay that fails is retried by the next ``approvals run``)."""
    with db.session() as session:
        digest = session.get(Digest, digest_id)
        if digest is None:
            raise DigestNotFound(digest_id)
        count = send_requests(session, config, digest, now=now, kind="request")
    flush(db, config, now=now)
    return count
