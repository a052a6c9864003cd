"""What the editors see of a digest and what they saw: the content with their intro paragraph
(what is frozen on approval and what the preview renders), the snapshot kept with each
request, and the diff between two snapshots. Reads the audit log; writes nothing.
"""

from __future__ import annotations

from typing import Any

from newsexchange.config import Config
from newsexchange.db import Digest, Session
from newsexchange.db.queries import audit as audit_log
from newsexchange.digest.render import digest_content

__all__ = [
    "REQUEST_ACTIONS",
    "changes",
    "content_with_intro",
    "current_intro",
    "has_changes",
    "last_requested_version",
    "last_snapshot",
    "snapshot",
]

REQUEST_ACTIONS = ("approval_requested", "approval_requested_again")


def current_intro(session: Session, digest: Digest) -> dict[str, str]:
    """The editors' intro paragraph per language (empty ones left out)."""
    out: dict[str, str] = {}
    for r in audit_log.entries(session, digest.id, actions=("edit_intro",)):
        detail = r.detail or {}
        lang, text = detail.get("language"), detail.get("intro")
        if isinstance(lang, str):
            out[lang] = text if isinstance(text, str) else ""
    return {k: v for k, v in out.items() if v}


def content_with_intro(session: Session, config: Config, digest: Digest) -> dict[str, Any]:
    """``render.digest_content`` plus ``intro`` ({language: text}): what is frozen on approval
    and what the preview renders."""
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
    last = audit_log.latest(session, digest.id, REQUEST_ACTIONS)
    if last is None:
        return None
    snap = (last.detail or {}).get("snapshot")
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


def last_requested_version(session: Session, digest: Digest) -> int | None:
    """The digest version the editors were last asked to approve (from the audit log)."""
    last = audit_log.latest(session, digest.id, REQUEST_ACTIONS)
    if last is None:
        return None
    version = (last.detail or {}).get("version")
    return int(version) if isinstance(version, int) else None
