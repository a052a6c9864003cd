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
  meets the deadline rule like any unapproved digest (``notify.run_approvals``).
- The intro paragraph is kept per language in the audit log (action ``edit_intro``, with the
  version it was written on; the latest one counts) and is part of the content frozen on
  approval: ``content["intro"]`` is ``{language: text}``.
- The requests' audit entries keep a small snapshot of what was mailed (item ids, titles,
  positions, intro), from which the diff to "the version you saw" is computed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsexchange.approval.audit import audit
from newsexchange.config import Config
from newsexchange.db import AuditEntry, Digest
from newsexchange.errors import ApprovalError

INTRO_MAX = 2000
REQUEST_ACTIONS = ("approval_requested", "approval_requested_again")


def current_intro(session: Session, digest: Digest) -> dict[str, str]:
    """The editors' intro paragraph per language (empty ones left out)."""
    rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.digest_id == digest.id, AuditEntry.action == "edit_intro")
        .order_by(AuditEntry.at, AuditEntry.id)
    ).all()
    out: dict[str, str] = {}
    for r in rows:
        detail = r.detail or {}
        lang, text = detail.get("language"), detail.get("intro")
        if isinstance(lang, str):
            out[lang] = text if isinstance(text, str) else ""
    return {k: v for k, v in out.items() if v}


def content_with_intro(session: Session, config: Config, digest: Digest) -> dict[str, Any]:
    """``render.digest_content`` plus ``intro`` ({language: text}): what is frozen on approval
    and what the preview renders."""
    from newsexchange.digest.render import digest_content

    content = digest_content(session, config, digest)
    intro = current_intro(session, digest)
    if intro:
        content["intro"] = intro
    return content


def snapshot(content: dict[str, Any]) -> dict[str, Any]:
    """What an editor saw of a version, small enough for an audit entry."""
    return {
        "version": content.get("version"),
        "items": [
            {"id": it["item_id"], "title": it["title"], "position": it["position"]}
            for it in content.get("items", [])
        ],
        "intro": dict(content.get("intro") or {}),
    }


def last_snapshot(session: Session, digest: Digest) -> dict[str, Any] | None:
    """The snapshot of the version the editors were last asked to approve."""
    rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.digest_id == digest.id, AuditEntry.action.in_(REQUEST_ACTIONS))
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(1)
    ).all()
    if not rows:
        return None
    snap = (rows[0].detail or {}).get("snapshot")
    return snap if isinstance(snap, dict) else None


def changes(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """Items added, dropped, moved and retitled, and whether the intro changed, from snapshot
    ``before`` to snapshot ``after``. Empty lists when there is nothing to compare with."""
    out: dict[str, Any] = {
        "from_version": None,
        "added": [],
        "dropped": [],
        "moved": [],
        "retitled": [],
        "intro_changed": False,
    }
    if not before:
        return out
    out["from_version"] = before.get("version")
    old = {it["id"]: it for it in before.get("items", [])}
    new = {it["id"]: it for it in after.get("items", [])}
    out["added"] = [new[i]["title"] for i in new if i not in old]
    out["dropped"] = [old[i]["title"] for i in old if i not in new]
    # Moved: the relative order of the items in both changed (not a shift from an insertion).
    common_old = [i for i in old if i in new]
    common_new = sorted((i for i in new if i in old), key=lambda i: new[i]["position"])
    common_old.sort(key=lambda i: old[i]["position"])
    rank_old = {i: n for n, i in enumerate(common_old, 1)}
    rank_new = {i: n for n, i in enumerate(common_new, 1)}
    out["moved"] = [
        {"title": new[i]["title"], "from": old[i]["position"], "to": new[i]["position"]}
        for i in common_new
        if rank_old[i] != rank_new[i]
    ]
    out["retitled"] = [
        {"from": old[i]["title"], "to": new[i]["title"]}
        for i in common_new
        if old[i]["title"] != new[i]["title"]
    ]
    out["intro_changed"] = (before.get("intro") or {}) != (after.get("intro") or {})
    return out


def has_changes(diff: dict[str, Any]) -> bool:
    return bool(
        diff["added"]
        or diff["dropped"]
        or diff["moved"]
        or diff["retitled"]
        or diff["intro_changed"]
    )


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
    from newsexchange.approval.decide import lock_digest
    from newsexchange.approval.notify import last_requested_version

    lock_digest(session, digest)
    if digest.state == "revising":
        return False
    if digest.state not in ("draft", "awaiting_approval", "held"):
        raise ApprovalError(
            f"digest {digest.id} is already {digest.state.replace('_', ' ')}; it can no longer "
            "be changed"
        )
    if digest.state == "draft" and last_requested_version(session, digest) is None:
        return False
    old = digest.version
    digest.version = old + 1
    digest.state = "revising"
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
    from newsexchange.approval.decide import lock_digest
    from newsexchange.approval.notify import send_requests

    lock_digest(session, digest)
    if digest.state not in ("revising", "draft", "held"):
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
