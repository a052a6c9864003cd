"""What a reply means and what a decision does: pure rules over plain data (no database, no
network, no mail), like reader's ``Decider``. The I/O around them is :mod:`.decide`
(decisions) and :mod:`.inbound` (replies); the reasons behind each rule are in their
docstrings.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from newsexchange.approval.addresses import TokenRef, token_refs
from newsexchange.approval.message import InboundMessage
from newsexchange.approval.sender_auth import (
    SenderAuth,
    verify_authentication_results,
    verify_sendgrid,
)

__all__ = [
    "CHANNELS",
    "DECISIONS",
    "UNVERIFIED_NOTICE_EVERY",
    "Decision",
    "Due",
    "EditorNote",
    "Intent",
    "Outcome",
    "ReplyCommand",
    "ReplyVerdict",
    "Verb",
    "auto_reply_reason",
    "due",
    "fresh_text",
    "judge_reply",
    "may_notify_unverified",
    "parse_command",
    "sender_authentication",
    "tally",
]

# -- what the reply says ------------------------------------------------------------------------

Verb = Literal["approve", "reject", "drop"]

# The editors write Finnish and Russian as readily as English.
_VERBS: dict[str, Verb] = {
    **dict.fromkeys(["approve", "approved", "hyväksy", "hyväksyn", "hyväksytty"], "approve"),
    **dict.fromkeys(["одобрить", "одобряю", "одобрено", "утверждаю"], "approve"),
    **dict.fromkeys(["reject", "rejected", "hylkää", "hylkään", "отклонить", "отклоняю"], "reject"),
    **dict.fromkeys(["drop", "remove", "poista", "убрать", "удалить"], "drop"),
}


@dataclass(frozen=True)
class ReplyCommand:
    verb: Verb
    reason: str | None = None  # REJECT <reason>
    positions: tuple[int, ...] = ()  # DROP 3, 7 (1-based, as numbered in the request)


_QUOTE_HEADER = re.compile(
    r"""^(
        -{2,}\s*(original\s+message|alkuperäinen\s+viesti|исходное\s+сообщение)\s*-{2,}
      | _{8,}
      | .*\b(wrote|kirjoitti|пишет|написал|написала|написал\(а\)|schrieb|a\s+écrit)\s*:\s*$
      | .*<[^<>@\s]+@[^<>\s]+>\s*:\s*$
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_OUTLOOK_FROM = re.compile(r"^\**(from|lähettäjä|от|von)\s*:\**\s", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(
    r"^\**(sent|date|to|subject|lähetetty|päivämäärä|vastaanottaja|aihe|отправлено|дата|кому|тема)"
    r"\s*:",
    re.IGNORECASE,
)


def fresh_text(text: str) -> str:
    """The part of a reply the sender wrote now: quoted lines and quoted blocks removed."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    for i, line in enumerate(lines):
        s = line.strip()
        if s == "--" and line.rstrip() in ("--", "-- "):  # signature delimiter
            break
        if s.startswith(">"):
            continue
        if _QUOTE_HEADER.match(s):
            break
        # "On Mon, 23 Nov 2026 at 10:00, Exchange <news@example.org>" + newline + "wrote:"
        if s.lower().startswith("on ") and i + 1 < len(lines):
            joined = s + " " + lines[i + 1].strip()
            if _QUOTE_HEADER.match(joined):
                break
        if _OUTLOOK_FROM.match(s) and any(
            _OUTLOOK_NEXT.match(x.strip()) for x in lines[i + 1 : i + 5]
        ):
            break
        out.append(line)
    return "\n".join(out).strip()


def parse_command(text: str) -> ReplyCommand | None:
    """The command on the first non-empty line of the fresh text, or None."""
    fresh = fresh_text(text)
    lines = [ln.strip() for ln in fresh.split("\n")]
    nonempty = [ln for ln in lines if ln]
    if not nonempty:
        return None
    first = nonempty[0]
    m = re.match(r"^\**(\w+)\**(.*)$", first)
    if not m:
        return None
    verb = _VERBS.get(m.group(1).lower())
    rest = m.group(2).strip()
    if verb is None:
        return None
    if verb == "approve":
        # Exactly the word (with punctuation at most): "Approve? Not sure…" must not approve.
        return ReplyCommand("approve") if re.fullmatch(r"[.!]*", rest) else None
    if verb == "reject":
        reason_lines = [rest.lstrip(":-–— ").strip(), *nonempty[1:]]
        reason = "\n".join(x for x in reason_lines if x).strip()[:2000]
        return ReplyCommand("reject", reason=reason or None)
    rest = rest.lstrip(":").strip().rstrip(".")
    positions = _positions(rest)
    return ReplyCommand("drop", positions=positions) if positions else None


def _positions(spec: str) -> tuple[int, ...]:
    """ "3, 7", "3 7", "3-5 and 9" → (3, 7) / (3, 4, 5, 9); anything else → ()."""
    spec = re.sub(r"\b(and|ja|и)\b", ",", spec, flags=re.IGNORECASE)
    out: list[int] = []
    for part in re.split(r"[,;\s]+", spec.strip()):
        if not part:
            continue
        m = re.fullmatch(r"#?(\d{1,3})(?:[-–](\d{1,3}))?", part)
        if not m:
            return ()
        a = int(m.group(1))
        b = int(m.group(2) or a)
        if a < 1 or b < a or b - a > 100:
            return ()
        out.extend(range(a, b + 1))
    return tuple(dict.fromkeys(out))


# -- is it automatic, and does it carry the token -----------------------------------------------

_OOO_SUBJECT = re.compile(
    r"^(auto(matic)?\s*(reply|response)|autoreply|auto:|out of (the )?office|ooo\b|"
    r"abwesenheit|automaattinen vastaus|poissa|lomalla|автоответ|автоматический ответ|"
    r"вне офиса|в отпуске|undeliverable|undelivered|delivery status notification|"
    r"mail delivery failed|returned mail)",
    re.IGNORECASE,
)


def auto_reply_reason(msg: InboundMessage) -> str | None:
    """Why this message is automatic (RFC 3834 and the common conventions), or None."""
    auto = (msg.header("auto-submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    for name in ("x-autoreply", "x-autorespond", "x-auto-reply", "x-failed-recipients"):
        if msg.header(name) is not None:
            return f"{name} header"
    prec = (msg.header("precedence") or "").strip().lower()
    if prec in ("bulk", "auto_reply", "junk", "list"):
        return f"Precedence: {prec}"
    if msg.header("list-id") is not None:
        return "mailing-list message (List-Id)"
    if msg.content_type == "multipart/report":
        return "delivery or read report (multipart/report)"
    if msg.return_path == "" or (msg.envelope_from is not None and msg.envelope_from == ""):
        return "null return path (a bounce)"
    local = msg.sender.split("@", 1)[0]
    if local in ("mailer-daemon", "postmaster", "noreply", "no-reply") or not msg.sender:
        return f"sent by {msg.sender or 'nobody'} (a bounce or robot)"
    subject = re.sub(r"^((re|fw|fwd|vs|ответ|на)\s*:\s*)+", "", msg.subject.strip(), flags=re.I)
    if _OOO_SUBJECT.match(subject):
        return "out-of-office or bounce subject"
    return None


def sender_authentication(msg: InboundMessage, *, authserv_id: str | None) -> SenderAuth:
    """Is the From address authenticated for its domain? SendGrid's own checks for what
    SendGrid posted; the trusted Authentication-Results header for everything else."""
    if msg.auth_source == "sendgrid":
        return verify_sendgrid(
            from_address=msg.sender,
            envelope_from=msg.envelope_from,
            spf=msg.spf,
            dkim=msg.dkim,
        )
    return verify_authentication_results(
        from_address=msg.sender, headers=msg.auth_results, authserv_id=authserv_id
    )


@dataclass(frozen=True)
class ReplyVerdict:
    act: bool
    reason: str  # why it may not act, or what it does
    command: ReplyCommand | None = None
    notify_sender: bool = False  # worth an answer: a verified editor whose reply did nothing
    #: the reply names an editor and carries their token but is not authenticated for their
    #: domain: refused, and the editor (at their configured address) is told
    unverified: bool = False


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.lower().encode(), b.lower().encode())


def _wrong_token(sender: str, editors: Mapping[str, str], carried: list[TokenRef]) -> ReplyVerdict:
    """A reply without its sender's own token: another editor's, or none."""
    others = sorted(e for e, t in editors.items() for r in carried if _same(r.token, t))
    if others:
        return ReplyVerdict(
            False,
            f"the reply carries the reply token of {', '.join(others)}, not of "
            f"{sender}: a reply acts only for the editor whose request it answers",
        )
    return ReplyVerdict(False, f"the reply does not carry {sender}'s token for this digest")


def judge_reply(
    msg: InboundMessage,
    *,
    editor_tokens: Mapping[str, str],
    digest_version: int,
    local: str,
    domain: str,
    authserv_id: str | None,
) -> ReplyVerdict:
    """May this reply act on this digest, and what does it ask? Pure: plain data in and out.

    ``editor_tokens`` maps each editor (lowercased) to their own reply token for this digest
    (:func:`newsexchange.approval.tokens.editor_reply_token`); ``authserv_id`` is the
    configured ``mail.imap.authserv_id`` (None: Authentication-Results are not trusted).
    """
    why = auto_reply_reason(msg)
    if why:
        return ReplyVerdict(False, f"automatic message ignored: {why}")
    editors = {e.strip().lower(): t for e, t in editor_tokens.items()}
    if msg.sender not in editors:
        return ReplyVerdict(False, f"{msg.sender} is not an editor of this exchange")
    if len(set(msg.from_addresses)) > 1:
        return ReplyVerdict(
            False, "the From header names more than one address; a reply must come from one"
        )
    carried = token_refs(msg, local=local, domain=domain)
    refs = [r for r in carried if _same(r.token, editors[msg.sender])]
    if not refs:
        return _wrong_token(msg.sender, editors, carried)
    auth = sender_authentication(msg, authserv_id=authserv_id)
    if not auth.ok:
        return ReplyVerdict(
            False, f"the sender could not be verified: {auth.reason}", unverified=True
        )
    command = parse_command(msg.text)
    if command is None:
        return ReplyVerdict(
            False,
            "no command on the first line of the reply (expected APPROVE, REJECT <reason> "
            "or DROP 3, 7)",
            notify_sender=True,
        )
    versions = {r.version for r in refs if r.version is not None}
    if versions and digest_version not in versions:
        return ReplyVerdict(
            False,
            f"the reply answers version {max(versions)} but the digest is now version "
            f"{digest_version}; answer the latest approval request",
            command=command,
            notify_sender=True,
        )
    return ReplyVerdict(True, command.verb, command=command)


# -- what a decision does -----------------------------------------------------------------------

Decision = Literal["approve", "reject", "changes"]
DECISIONS: tuple[Decision, ...] = ("approve", "reject", "changes")
CHANNELS = ("web", "email", "cli")

#: What one editor's decision does to the digest (:func:`tally`).
Intent = Literal["repeat", "record", "approve", "reject"]


@dataclass(frozen=True)
class Outcome:
    """``repeat``: the editor had already approved this version, change nothing; ``record``:
    write the decision, the digest stays open; ``approve``: write it and approve the digest
    (enough editors have); ``reject``: write it, the digest goes back to the editors."""

    intent: Intent
    approved_by: tuple[str, ...]


@dataclass(frozen=True)
class EditorNote:
    """A mail a decision asks for: tell the other editors that ``editor`` rejected the digest
    or asked for changes, with their words (:func:`~newsexchange.approval.notices.
    queue_notes` writes it)."""

    editor: str
    decision: str
    comment: str | None


def tally(decisions: Mapping[str, str], required: int, *, editor: str, decision: str) -> Outcome:
    """``decisions``: each editor's latest word on the current version, before this one.

    Only approvals of the current version count, and each editor's latest word counts (an
    editor who approved and then asked for changes no longer counts as approving)."""
    if decisions.get(editor) == decision == "approve":
        # A second click or a second "APPROVE" reply: say so, change nothing.
        return Outcome("repeat", tuple(sorted(e for e, d in decisions.items() if d == "approve")))
    after = {**decisions, editor: decision}
    approved_by = tuple(sorted(e for e, d in after.items() if d == "approve"))
    if decision == "approve":
        return Outcome("approve" if len(approved_by) >= required else "record", approved_by)
    if decision == "reject":
        return Outcome("reject", approved_by)
    return Outcome("record", approved_by)


# -- what the approval step does to a digest ----------------------------------------------------

#: What :func:`due` says the approval step does to one digest now.
Due = Literal["request", "request_changed", "deadline", "remind", "nothing_to_remind", "wait"]


def due(
    *,
    state: str,
    requested_at: datetime | None,
    reminder_sent_at: datetime | None,
    last_requested_version: int | None,
    version: int,
    waiting: bool,
    reminder_hours: float,
    deadline_hours: float,
    now: datetime,
) -> Due:
    """Requests for new drafts, reminders, deadlines (``approvals run``), decided on plain
    values; ``waiting``: some editor has not answered the current version."""
    deadline_passed = requested_at is not None and now >= requested_at + timedelta(
        hours=deadline_hours
    )
    if state == "revising":
        # A draft with the editors: nobody is asked until one of them sends it for approval,
        # but the deadline (from the last request) still decides if nobody does.
        return "deadline" if deadline_passed else "wait"
    if state == "draft" or requested_at is None:
        return "request"
    if last_requested_version not in (None, version):
        # Rebuilt since the editors were asked (a translation finished, new items): the
        # approvals they give must name this version, so they get this version to approve.
        return "request_changed"
    if deadline_passed:
        return "deadline"
    if reminder_sent_at is None and now >= requested_at + timedelta(hours=reminder_hours):
        return "remind" if waiting else "nothing_to_remind"
    return "wait"


#: At most one "your reply could not be verified" mail per editor and digest in this time, so
#: a stream of forged replies cannot flood an editor's inbox.
UNVERIFIED_NOTICE_EVERY = timedelta(hours=1)


def may_notify_unverified(recent: Iterable[Mapping[str, Any]]) -> bool:
    """``recent``: the details of this editor's ``reply_unverified`` audit entries on the
    digest within :data:`UNVERIFIED_NOTICE_EVERY`; none of them told the editor yet."""
    return not any(d.get("notified") for d in recent)
