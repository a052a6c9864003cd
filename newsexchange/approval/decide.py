"""Editors' decisions on a digest: approve, reject, request changes; and editor edits.

The rules, in one place:

- Only an editor of the digest's exchange decides (addresses compared lowercased).
- An approval names the digest *version* it approved. Only approvals of the current version
  count, so any change (which bumps the version) voids earlier approvals by construction.
- ``approvals_required`` distinct editors must approve the current version. Each editor's
  latest word on that version counts (an editor who approved and then asked for changes no
  longer counts as approving).
- When the last required approval arrives, in the same transaction: the content is rendered
  and frozen (``digest.frozen``, ``digest.content_hash``) and the state becomes ``approved``;
  the recipients are *counted* (one query, :func:`newsexchange.delivery.outbox.
  recipient_count`) for the page and the audit log. The delivery rows themselves are written
  by the send step in a worker (``run_send``, ``plan_shards``), idempotently: queueing a
  100,000-contact list took minutes inside the editor's request (issue 13).
- A rejection returns the digest to the editors as a draft of the next version (state
  ``revising``, version + 1, the reason kept): they edit it on the review page and send it
  for approval again (:mod:`newsexchange.approval.desk`); the deadline rule still applies.
  A request for changes is recorded and leaves the digest open for edits. Only the deadline
  rule (``on_deadline: reject``) ends a digest as ``rejected``.
- A draft being revised takes no decisions until it is sent for approval.
- A digest that is approved, sending, sent or rejected takes no further decisions.
- Every decision and every edit is written to the audit log in the same transaction.

The rules that need no database (what a decision does, given each editor's latest word) are
:func:`newsexchange.approval.rules.tally`; this module loads, applies the outcome and writes.
It sends nothing: the mails a decision asks for are in :attr:`DecisionResult.notes`, which
the caller queues (:func:`newsexchange.approval.notices.queue_notes`) before its commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from newsexchange.approval.audit import audit
from newsexchange.approval.content import content_with_intro
from newsexchange.approval.rules import (
    CHANNELS,
    DECISIONS,
    Decision,
    EditorNote,
    Outcome,
    tally,
)
from newsexchange.config import Config, ExchangeSettings
from newsexchange.db import Approval, Digest, Session
from newsexchange.db.queries import approvals as queries
from newsexchange.db.queries.approvals import lock_digest
from newsexchange.delivery.outbox import recipient_count
from newsexchange.digest import edit_digest
from newsexchange.digest.render import content_hash as _content_hash
from newsexchange.digest.sendable import included_count, refusal
from newsexchange.digest.states import OPEN, DigestState, move
from newsexchange.errors import ApprovalError

__all__ = [
    "CHANNELS",
    "DECISIONS",
    "Decision",
    "DecisionResult",
    "apply_edit",
    "approvers",
    "content_hash",
    "decide",
    "freeze_content",
    "is_editor",
    "latest_decisions",
    "lock_digest",
]


@dataclass
class DecisionResult:
    digest_id: int
    decision: str
    editor: str
    channel: str
    version: int
    state: str
    approved_by: list[str] = field(default_factory=list)
    required: int = 1
    repeated: bool = False  # the editor had already said exactly this
    enqueued: int | None = None  # recipients counted when this decision approved the digest
    content_hash: str | None = None
    #: the mails this decision asks for (not part of the JSON): the caller queues them
    notes: list[EditorNote] = field(default_factory=list)

    @property
    def message(self) -> str:
        if self.state == "approved" and self.decision == "approve":
            return (
                f"Digest {self.digest_id} is approved (version {self.version}); "
                f"{self.enqueued or 0} deliveries queued."
            )
        if self.decision == "approve":
            note = " (you had already approved it)" if self.repeated else ""
            return (
                f"Your approval of digest {self.digest_id} version {self.version} is recorded"
                f"{note}: {len(self.approved_by)} of {self.required} approvals."
            )
        if self.decision == "reject":
            return (
                f"Version {self.version - 1} of digest {self.digest_id} is rejected; the digest "
                f"is back with the editors as a draft of version {self.version}."
            )
        return (
            f"Your request for changes to digest {self.digest_id} is recorded; "
            "edits on the review page make a new version for approval."
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["notes"]
        data["message"] = self.message
        return data


def is_editor(config: Config, digest: Digest, address: str) -> bool:
    exchange = config.exchange(digest.exchange_id)
    return address.strip().lower() in exchange.editors


def latest_decisions(session: Session, digest: Digest) -> dict[str, str]:
    """Each editor's latest decision on the digest's *current* version."""
    return queries.latest_decisions(session, digest.id, digest.version)


def approvers(session: Session, digest: Digest) -> list[str]:
    return sorted(e for e, d in latest_decisions(session, digest).items() if d == "approve")


def decide(
    session: Session,
    config: Config,
    digest: Digest,
    *,
    editor: str,
    decision: str,
    channel: str,
    address: str | None,
    comment: str | None = None,
    now: datetime,
) -> DecisionResult:
    """Record one editor's decision; approve the digest when enough editors have."""
    lock_digest(session, digest)
    exchange = config.exchange(digest.exchange_id)
    editor = editor.strip().lower()
    _refuse(session, digest, exchange, editor, decision, channel, address, now=now)
    comment = (comment or "").strip() or None
    outcome = tally(
        latest_decisions(session, digest),
        exchange.approvals_required,
        editor=editor,
        decision=decision,
    )
    result = DecisionResult(
        digest_id=digest.id,
        decision=decision,
        editor=editor,
        channel=channel,
        version=digest.version,
        state=digest.state,
        approved_by=list(outcome.approved_by),
        required=exchange.approvals_required,
    )
    if outcome.intent == "repeat":
        result.repeated = True
        return result
    _record(session, digest, editor, decision, channel, address, comment, now=now)
    _apply(session, config, digest, outcome, result, comment=comment, now=now)
    result.state = digest.state
    session.flush()
    if decision in ("reject", "changes"):
        result.notes.append(EditorNote(editor, decision, comment))
    return result


def _apply(
    session: Session,
    config: Config,
    digest: Digest,
    outcome: Outcome,
    result: DecisionResult,
    *,
    comment: str | None,
    now: datetime,
) -> None:
    """What the decision does to the digest, as :func:`~newsexchange.approval.rules.tally`
    said."""
    if outcome.intent == "approve":
        _approve(session, config, digest, result, now=now)
    elif outcome.intent == "reject":
        # Back to the editors as a draft of the next version: nothing is mailed for
        # approval until one of them sends it (approval.desk.submit).
        move(digest, "reject")
        digest.version += 1
        digest.decided_reason = comment or f"rejected by {result.editor}"
    elif result.decision == "approve" and digest.state == DigestState.DRAFT:
        move(digest, "request")  # one approval of several: the digest is now awaiting
    # "changes": recorded; the digest stays open for the edits it asks for.


def _refuse(
    session: Session,
    digest: Digest,
    exchange: ExchangeSettings,
    editor: str,
    decision: str,
    channel: str,
    address: str | None,
    *,
    now: datetime,
) -> None:
    """Raise :class:`ApprovalError` when this decision may not be taken (a non-editor's
    attempt is audited: the caller's transaction commits that entry only if it goes on)."""
    if decision not in DECISIONS:
        raise ApprovalError(
            f"unknown decision {decision!r} (expected one of: {', '.join(DECISIONS)})"
        )
    if channel not in CHANNELS:
        raise ApprovalError(f"unknown channel {channel!r} (expected one of: {', '.join(CHANNELS)})")
    if editor not in exchange.editors:
        audit(
            session,
            digest_id=digest.id,
            actor=editor,
            action=f"{decision}_refused",
            channel=channel,
            address=address,
            now=now,
            reason="not an editor of this exchange",
        )
        raise ApprovalError(
            f"{editor} is not an editor of exchange {exchange.id} "
            f"(editors: {', '.join(exchange.editors)})"
        )
    if digest.state not in OPEN:
        raise ApprovalError(
            f"digest {digest.id} is already {digest.state.replace('_', ' ')}; "
            "it takes no further decisions"
        )
    if digest.state == DigestState.REVISING:
        raise ApprovalError(
            f"digest {digest.id} is a draft being revised (version {digest.version}); "
            "send it for approval from the review page first"
        )
    if decision == "approve":
        _refuse_too_few(digest, exchange)


def _refuse_too_few(digest: Digest, exchange: ExchangeSettings) -> None:
    """An approval of a digest with fewer items than the exchange sends is refused."""
    too_few = refusal(
        included_count((e.included, e.dropped) for e in digest.entries), exchange, digest.id
    )
    if too_few is not None:
        raise ApprovalError(too_few)


def _record(
    session: Session,
    digest: Digest,
    editor: str,
    decision: str,
    channel: str,
    address: str | None,
    comment: str | None,
    *,
    now: datetime,
) -> None:
    session.add(
        Approval(
            digest_id=digest.id,
            digest_version=digest.version,
            editor=editor,
            decision=decision,
            channel=channel,
            comment=comment,
            created_at=now,
        )
    )
    audit(
        session,
        digest_id=digest.id,
        actor=editor,
        action=decision,
        channel=channel,
        address=address,
        now=now,
        version=digest.version,
        comment=comment,
    )


def _approve(
    session: Session, config: Config, digest: Digest, result: DecisionResult, *, now: datetime
) -> None:
    frozen = freeze_content(session, config, digest)
    digest.frozen = frozen  # with the editors' intro paragraphs (approval.desk)
    digest.content_hash = content_hash(frozen)
    move(digest, "approve")
    digest.approved_at = now
    digest.decided_reason = None
    session.flush()
    # How many will be mailed, as the page says; the rows are queued by the send step, so
    # the count may differ by whoever joins or unsubscribes before the send starts.
    result.enqueued = recipient_count(session, config, digest)
    result.content_hash = digest.content_hash
    audit(
        session,
        digest_id=digest.id,
        actor="newsexchange",
        action="approved",
        channel="system",
        address=None,
        now=now,
        version=digest.version,
        approved_by=result.approved_by,
        content_hash=digest.content_hash,
        deliveries=result.enqueued,
    )


def freeze_content(session: Session, config: Config, digest: Digest) -> dict[str, Any]:
    """The digest exactly as approved (``render.digest_content``): what delivery renders and
    sends, whatever changes afterwards (a translation corrected later does not leak in)."""
    return content_with_intro(session, config, digest)


def content_hash(frozen: dict[str, Any]) -> str:
    return _content_hash(frozen)


def apply_edit(
    session: Session,
    config: Config,
    digest: Digest,
    *,
    editor: str,
    channel: str,
    address: str | None,
    now: datetime,
    drop: Sequence[int] = (),
    pin: Sequence[int] = (),
    order: Sequence[int] | None = None,
    restore: Sequence[int] = (),
    unpin: Sequence[int] = (),
    note: str | None = None,
) -> bool:
    """An editor's change (by item position; ``restore`` by item id): a new version, earlier
    approvals void, logged. On a draft being revised (``revising``) the version was already
    bumped when the revision began: changes accumulate on it.

    Returns whether anything changed. The caller then mails fresh approval requests
    (``notices.send_requests(kind="changed")``, queued) or, on the review page, leaves them for
    "Send for approval".
    """
    lock_digest(session, digest)
    exchange = config.exchange(digest.exchange_id)
    editor = editor.strip().lower()
    if editor not in exchange.editors:
        raise ApprovalError(f"{editor} is not an editor of exchange {exchange.id}")
    if digest.state not in OPEN:
        raise ApprovalError(
            f"digest {digest.id} is already {digest.state.replace('_', ' ')}; it can no longer "
            "be changed"
        )
    old_version = digest.version
    changed = edit_digest(
        session,
        digest,
        drop=tuple(drop),
        pin=tuple(pin),
        order=order,
        restore=tuple(restore),
        unpin=tuple(unpin),
        bump=digest.state != DigestState.REVISING,
        now=now,
    )
    if not changed:
        return False  # nothing a reader would see changed: approvals stand, no new request
    _audit_edit(
        session,
        digest,
        editor=editor,
        channel=channel,
        address=address,
        from_version=old_version,
        change={"drop": drop, "pin": pin, "restore": restore, "unpin": unpin, "order": order},
        note=note,
        now=now,
    )
    session.flush()
    return True


def _audit_edit(
    session: Session,
    digest: Digest,
    *,
    editor: str,
    channel: str,
    address: str | None,
    from_version: int,
    change: dict[str, Sequence[int] | None],
    note: str | None,
    now: datetime,
) -> None:
    audit(
        session,
        digest_id=digest.id,
        actor=editor,
        action="edit",
        channel=channel,
        address=address,
        now=now,
        from_version=from_version,
        version=digest.version,
        **{k: list(v) if v else None for k, v in change.items()},
        note=note,
    )
