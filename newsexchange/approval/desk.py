"""The editor's desk: a draft of the next version, edited by the editors, sent for approval once.

The rules:

- A rejection (page, reply or console) or the first edit on the review page of a digest the
  editors have already been asked about makes a *draft of the next version*: state
  ``revising``, ``version + 1``. Nobody is mailed.
- Edits on that draft (drop, restore, pin, unpin, reorder, a corrected translation, the intro
  paragraph) accumulate on it: no new version each, no mail.
- "Send for approval" (:func:`submit`) mails each *other* editor one request, with what
  changed since the version they last saw (:func:`changes`); the digest is then
  ``awaiting_approval`` and the deadline clock restarts. A draft nobody sends for approval
  meets the deadline rule like any unapproved digest (``step.run_approvals``).
- The intro paragraph is kept per language in the audit log (action ``edit_intro``, with the
  version it was written on; the latest one counts) and is part of the content frozen on
  approval: ``content["intro"]`` is ``{language: text}``.
- The requests' audit entries keep a small snapshot of what was mailed (item ids, titles,
  positions, intro), from which the diff to "the version you saw" is computed.
"""

from __future__ import annotations

from datetime import datetime

from newsexchange.approval.audit import audit
from newsexchange.approval.content import (
    REQUEST_ACTIONS,
    changes,
    content_with_intro,
    current_intro,
    has_changes,
    last_snapshot,
    snapshot,
)
from newsexchange.approval.content import last_requested_version as last_requested_version
from newsexchange.approval.notices import send_requests
from newsexchange.config import Config
from newsexchange.db import Digest, Session
from newsexchange.db.queries.approvals import lock_digest
from newsexchange.digest.states import OPEN, DigestState, move
from newsexchange.errors import ApprovalError

INTRO_MAX = 2000
#: A digest the editors can still start a revision of (a revision already begun continues).
_REVISABLE = OPEN - {DigestState.REVISING}
#: What "Send for approval" accepts: a draft (being revised, or held past its deadline).
_SUBMITTABLE = frozenset({DigestState.REVISING, DigestState.DRAFT, DigestState.HELD})


def start_revision(
    session: Session,
    digest: Digest,
    *,
    editor: str,
    channel: str,
    address: str | None,
    now: datetime,
) -> bool:
    """Make the digest a draft of the next version if the editors have seen this one; True
    when that happened. A draft nobody was asked about yet stays as it is."""
    lock_digest(session, digest)
    if digest.state == "revising":
        return False
    if digest.state not in _REVISABLE:
        raise ApprovalError(
            f"digest {digest.id} is already {digest.state.replace('_', ' ')}; it can no longer "
            "be changed"
        )
    if digest.state == "draft" and last_requested_version(session, digest) is None:
        return False
    old = digest.version
    digest.version = old + 1
    move(digest, "revise")
    audit(
        session,
        digest_id=digest.id,
        actor=editor,
        action="revision_started",
        channel=channel,
        address=address,
        now=now,
        from_version=old,
        version=digest.version,
    )
    session.flush()
    return True


def set_intro(
    session: Session,
    digest: Digest,
    *,
    language: str,
    text: str,
    editor: str,
    channel: str,
    address: str | None,
    now: datetime,
) -> bool:
    """Write (or clear, with "") the intro paragraph in ``language``; True when it changed."""
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip().split("\n"))
    if len(text) > INTRO_MAX:
        raise ApprovalError(
            f"the intro is {len(text)} characters long (expected at most {INTRO_MAX})"
        )
    if current_intro(session, digest).get(language, "") == text:
        return False
    audit(
        session,
        digest_id=digest.id,
        actor=editor,
        action="edit_intro",
        channel=channel,
        address=address,
        now=now,
        version=digest.version,
        language=language,
        intro=text,
    )
    session.flush()
    return True


def submit(
    session: Session,
    config: Config,
    digest: Digest,
    *,
    editor: str,
    address: str | None,
    now: datetime,
) -> int:
    """ "Send for approval": one request to each other editor; returns how many were mailed."""
    lock_digest(session, digest)
    if digest.state not in _SUBMITTABLE:
        raise ApprovalError(
            f"digest {digest.id} is {digest.state.replace('_', ' ')}: only a draft can be "
            "sent for approval"
        )
    exchange = config.exchange(digest.exchange_id)
    others = [e for e in exchange.editors if e != editor.strip().lower()]
    audit(
        session,
        digest_id=digest.id,
        actor=editor,
        action="sent_for_approval",
        channel="web",
        address=address,
        now=now,
        version=digest.version,
    )
    return send_requests(session, config, digest, now=now, kind="changed", editors=others)


__all__ = [
    "INTRO_MAX",
    "REQUEST_ACTIONS",
    "changes",
    "content_with_intro",
    "current_intro",
    "has_changes",
    "last_snapshot",
    "set_intro",
    "snapshot",
    "start_revision",
    "submit",
]
