"""Email replies to approval requests: APPROVE, REJECT <reason>, DROP 3, 7.

Two halves, as in the house style:

- **Pure decisions** (no database, no network): :func:`~.message.parse_message` /
  :func:`~.message.from_sendgrid` turn a reply into an :class:`~.message.InboundMessage`;
  :func:`~.rules.judge_reply` says whether it may act and what it asks for. They are tested
  on real RFC 5322 bytes (and importable from here, as before).
- **The step**, this module: :func:`process_inbound` does the reading and writing: finds the
  digest by its token, acts through :mod:`newsexchange.approval.decide`, logs, queues the
  acknowledgement, and remembers the message so a redelivered webhook or a re-polled mailbox
  never acts twice; the mail queue is flushed after the commit. The SendGrid Inbound Parse
  route lives in :mod:`newsexchange.web.approval`; :func:`poll_imap` reads a mailbox with
  imapclient.

A reply acts only when ALL of these hold:

1. it is not automatic: no ``Auto-Submitted`` (other than ``no``), ``X-Autoreply``,
   ``Precedence: bulk|auto_reply|junk|list``, ``List-Id``, out-of-office subject, bounce
   (``MAILER-DAEMON``/``postmaster`` sender, empty return path, ``multipart/report``);
2. the sender (From, exactly one address) is one of the exchange's editors;
3. it carries *that editor's own* reply token for the digest: the plus-address we set as
   Reply-To (``news+<token>.v<version>@…``, found in To/Cc/Delivered-To/X-Original-To or the
   SMTP envelope) or the subject tag ``[nx:<token>]`` (compared in constant time). Each
   editor's requests carry a different token (:func:`~newsexchange.approval.tokens.
   editor_reply_token`), so editor B cannot act with A's token, even authenticated as B;
4. it is authenticated for the From domain (:mod:`newsexchange.approval.sender_auth`): DKIM
   or SPF passing and aligned with it, as SendGrid reports it or, for IMAP, as the operator's
   own receiving server wrote in Authentication-Results (``mail.imap.authserv_id``). A reply
   that passes 1-3 but not this is refused, logged (``reply_unverified``) and the editor is
   mailed at their configured address that it could not be verified, with their review link;
5. it answers the digest's current version (when the reply says which version it answers:
   the plus-address or the In-Reply-To of our request): a DROP 3 counted against an older
   numbering would drop the wrong story;
6. the first non-empty line of the *fresh* text (quoted lines, "On … wrote:" and Outlook
   "-----Original Message-----"/"From:" blocks removed) is a command. Our own request quotes
   the word APPROVE in its instructions, so an APPROVE inside quoted text never counts.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from newsexchange.approval.addresses import (
    TokenRef,
    plus_address,
    reply_address_parts,
    request_message_id,
    subject_tag,
    token_refs,
)
from newsexchange.approval.audit import audit
from newsexchange.approval.decide import apply_edit, decide
from newsexchange.approval.message import (
    InboundFormatError,
    InboundMessage,
    from_sendgrid,
    parse_envelope,
    parse_message,
)
from newsexchange.approval.notices import (
    queue_notes,
    send_acknowledgement,
    send_requests,
    send_unverified_notice,
)
from newsexchange.approval.rules import (
    UNVERIFIED_NOTICE_EVERY,
    ReplyCommand,
    ReplyVerdict,
    Verb,
    auto_reply_reason,
    fresh_text,
    judge_reply,
    may_notify_unverified,
    parse_command,
    sender_authentication,
)
from newsexchange.approval.tokens import find_digest_by_reply_token, is_used, reply_token
from newsexchange.config import Config
from newsexchange.db import Database, Digest, Session, UsedToken
from newsexchange.db.queries import audit as audit_log
from newsexchange.errors import ApprovalError, ConfigError, DigestError
from newsexchange.mail.queue import flush

__all__ = [
    "PROCESSED_FLAG",
    "UNVERIFIED_NOTICE_EVERY",
    "InboundFormatError",
    "InboundMessage",
    "InboundResult",
    "PollReport",
    "ReplyCommand",
    "ReplyVerdict",
    "TokenRef",
    "Verb",
    "auto_reply_reason",
    "fresh_text",
    "from_sendgrid",
    "judge_reply",
    "parse_command",
    "parse_envelope",
    "parse_message",
    "plus_address",
    "poll_imap",
    "process_inbound",
    "reply_address_parts",
    "request_message_id",
    "sender_authentication",
    "subject_tag",
    "token_refs",
]

log = logging.getLogger(__name__)


# -- the step -----------------------------------------------------------------------------------


@dataclass
class InboundResult:
    status: Literal["acted", "ignored", "refused", "duplicate"]
    reason: str
    digest_id: int | None = None
    sender: str | None = None
    verb: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "digest_id": self.digest_id,
            "sender": self.sender,
            "verb": self.verb,
            **self.detail,
        }


def process_inbound(
    db: Database, config: Config, msg: InboundMessage, *, now: datetime, via: str
) -> InboundResult:
    """Act on one inbound reply (or decide not to), in one transaction; safe to repeat. The
    mail it queued (acknowledgement, notes, fresh requests) is sent after the commit."""
    with db.session() as session:
        result = _handle(session, config, msg, now=now, via=via)
    flush(db, config, now=now)
    return result


def _handle(
    session: Session, config: Config, msg: InboundMessage, *, now: datetime, via: str
) -> InboundResult:
    local, domain = reply_address_parts(config)
    if is_used(session, msg.fingerprint):
        return InboundResult("duplicate", "this message was already processed", None)
    session.add(UsedToken(jti=msg.fingerprint, used_at=now))
    digest = _digest_of(session, msg, local=local, domain=domain)
    if digest is None:
        log.info(
            "inbound reply ignored: no digest token",
            extra={"via": via, "sender_domain": msg.sender.rpartition("@")[2]},
        )
        return InboundResult("ignored", "the reply carries no known digest token")
    known = {e.id: e for e in config.exchanges}
    if digest.exchange_id not in known:
        return InboundResult(
            "ignored",
            f"digest {digest.id} belongs to exchange {digest.exchange_id!r}, "
            "which is no longer in the configuration",
            digest.id,
            msg.sender,
        )
    editors = known[digest.exchange_id].editors
    imap = config.mail.imap
    verdict = judge_reply(
        msg,
        editor_tokens={e: reply_token(config, digest, e) for e in editors},
        digest_version=digest.version,
        local=local,
        domain=domain,
        authserv_id=imap.authserv_id if imap is not None else None,
    )
    result = InboundResult(
        "refused" if verdict.unverified else "ignored",
        verdict.reason,
        digest.id,
        msg.sender,
        verdict.command.verb if verdict.command else None,
    )
    if not verdict.act or verdict.command is None:
        _not_acted(session, config, digest, msg, verdict, now=now, via=via)
        return result
    return _act(session, config, digest, msg, verdict.command, result, now=now, via=via)


def _digest_of(session: Session, msg: InboundMessage, *, local: str, domain: str) -> Digest | None:
    for ref in token_refs(msg, local=local, domain=domain):
        digest = find_digest_by_reply_token(session, ref.token)
        if digest is not None:
            return digest
    return None


def _not_acted(
    session: Session,
    config: Config,
    digest: Digest,
    msg: InboundMessage,
    verdict: ReplyVerdict,
    *,
    now: datetime,
    via: str,
) -> None:
    """A reply that may not act: logged; the editor told when it was theirs but unverified,
    or answered when a verified editor's reply did nothing."""
    notified = None
    if verdict.unverified:
        notified = _may_notify_unverified(session, digest.id, msg.sender, now=now)
        if notified:
            send_unverified_notice(
                session, config, digest, editor=msg.sender, reason=verdict.reason, now=now
            )
    audit(
        session,
        digest_id=digest.id,
        actor=msg.sender or "(unknown)",
        action="reply_unverified" if verdict.unverified else "reply_ignored",
        channel="email",
        address=msg.sender,
        now=now,
        reason=verdict.reason,
        via=via,
        subject=msg.subject[:200],
        notified=notified,
    )
    if verdict.notify_sender:
        _acknowledge(session, config, digest, msg, ok=False, message=verdict.reason, now=now)


def _act(
    session: Session,
    config: Config,
    digest: Digest,
    msg: InboundMessage,
    cmd: ReplyCommand,
    result: InboundResult,
    *,
    now: datetime,
    via: str,
) -> InboundResult:
    try:
        with session.begin_nested():
            message = _apply(session, config, digest, msg, cmd, result, now=now, via=via)
    except (ApprovalError, DigestError) as exc:
        result.status, result.reason = "refused", str(exc)
        audit(
            session,
            digest_id=digest.id,
            actor=msg.sender,
            action="reply_refused",
            channel="email",
            address=msg.sender,
            now=now,
            reason=str(exc),
            via=via,
        )
        _acknowledge(session, config, digest, msg, ok=False, message=str(exc), now=now)
        return result
    result.status, result.reason = "acted", message
    _acknowledge(session, config, digest, msg, ok=True, message=message, now=now)
    return result


def _apply(
    session: Session,
    config: Config,
    digest: Digest,
    msg: InboundMessage,
    cmd: ReplyCommand,
    result: InboundResult,
    *,
    now: datetime,
    via: str,
) -> str:
    """Do what the reply asks; returns what it did, for the acknowledgement."""
    if cmd.verb == "drop":
        if apply_edit(
            session,
            config,
            digest,
            editor=msg.sender,
            channel="email",
            address=msg.sender,
            now=now,
            drop=cmd.positions,
            note=f"reply via {via}",
        ):
            send_requests(session, config, digest, now=now, kind="changed")
        return (
            f"Items {', '.join(map(str, cmd.positions))} were dropped; digest "
            f"{digest.id} is now version {digest.version} and needs approval again."
        )
    d = decide(
        session,
        config,
        digest,
        editor=msg.sender,
        decision="approve" if cmd.verb == "approve" else "reject",
        channel="email",
        address=msg.sender,
        comment=cmd.reason,
        now=now,
    )
    queue_notes(session, config, digest, d.notes, now=now)
    result.detail = {"state": d.state, "approved_by": d.approved_by}
    return d.message


def _acknowledge(
    session: Session,
    config: Config,
    digest: Digest,
    msg: InboundMessage,
    *,
    ok: bool,
    message: str,
    now: datetime,
) -> None:
    """Answer the reply (queued): what it did, or why it did nothing."""
    send_acknowledgement(
        session,
        config,
        digest,
        to=msg.sender,
        ok=ok,
        message=message,
        in_reply_to=msg.message_id,
        now=now,
    )


def _may_notify_unverified(session: Session, digest_id: int, editor: str, *, now: datetime) -> bool:
    recent = audit_log.recent(
        session,
        digest_id,
        action="reply_unverified",
        actor=editor,
        since=now - UNVERIFIED_NOTICE_EVERY,
    )
    return may_notify_unverified(r.detail or {} for r in recent)


# -- IMAP -------------------------------------------------------------------------------------

PROCESSED_FLAG = b"$NxProcessed"


@dataclass
class PollReport:
    fetched: int = 0
    failed: int = 0  # messages that could not be processed (retried on the next poll)
    results: list[InboundResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return {
            "ok": self.ok,
            "fetched": self.fetched,
            "failed": self.failed,
            **{k: counts.get(k, 0) for k in ("acted", "ignored", "refused", "duplicate")},
            "results": [r.to_json() for r in self.results],
            "error": self.error,
        }


def poll_imap(db: Database, config: Config, *, now: datetime, limit: int = 200) -> PollReport:
    """Read new replies from the IMAP mailbox (mail.imap) and act on them.

    A message is handled when it lacks our ``$NxProcessed`` keyword (read or not: a person
    may have opened the mailbox first) and arrived within the longest link validity; after
    it is handled (acted on or not) it gets ``\\Seen`` and the keyword, and is moved to
    ``processed_folder`` when one is configured. Handling is also deduplicated by Message-ID in the database, so a
    crash between acting and flagging cannot make a reply act twice.
    """
    from imapclient import IMAPClient  # only on this path (tests/structure.py: LAZY_THIRD_PARTY)
    from imapclient.exceptions import IMAPClientError

    settings = config.mail.imap
    if settings is None:
        raise ConfigError("mail.imap is not configured (expected mail: imap: {host: …})")
    user = config.secret(settings.username_env)
    password = config.secret(settings.password_env)
    if not user or not password:
        raise ConfigError(
            f"IMAP credentials missing: set {settings.username_env} and {settings.password_env}"
        )
    report = PollReport()
    try:
        client = IMAPClient(settings.host, port=settings.port, ssl=settings.ssl, timeout=30)
    except (OSError, IMAPClientError) as exc:
        report.error = f"IMAP {settings.host}:{settings.port}: {exc}"
        return report
    try:
        client.login(user, password)
        client.select_folder(settings.folder)
        # Not "UNSEEN": someone opening the shared mailbox in a mail client marks replies
        # read, and they must still be processed. Replies older than the longest link
        # validity cannot answer a live request, so an old mailbox is not read back to 1999.
        days = max([e.approval.link_valid_days for e in config.exchanges] or [7.0])
        since = (now - timedelta(days=days + 1)).date()
        uids = client.search(["UNKEYWORD", PROCESSED_FLAG.decode(), "SINCE", since])[:limit]
        move_to = getattr(settings, "processed_folder", None)
        if move_to and not client.folder_exists(move_to):
            client.create_folder(move_to)
        for uid in uids:
            _handle_uid(client, uid, db, config, now=now, move_to=move_to, report=report)
    except (OSError, IMAPClientError) as exc:
        report.error = f"IMAP {settings.host}:{settings.port}: {exc}"
    finally:
        with contextlib.suppress(OSError, IMAPClientError):
            client.logout()
    return report


def _handle_uid(
    client: Any,
    uid: int,
    db: Database,
    config: Config,
    *,
    now: datetime,
    move_to: str | None,
    report: PollReport,
) -> None:
    """Fetch, process and flag one message of the mailbox."""
    data = client.fetch([uid], ["BODY.PEEK[]"]).get(uid) or {}
    raw = data.get(b"BODY[]")
    if not isinstance(raw, bytes):
        return
    report.fetched += 1
    try:
        msg = parse_message(raw)
        report.results.append(process_inbound(db, config, msg, now=now, via="imap"))
    except Exception as exc:
        # Left unflagged: the next poll tries again (a database hiccup must not lose
        # an approval; the Message-ID record stops a retry from acting twice). One
        # bad message does not block the others.
        log.exception("inbound IMAP message failed", extra={"uid": uid})
        report.failed += 1
        report.results.append(InboundResult("refused", f"could not process: {exc}"))
        return
    client.add_flags([uid], [b"\\Seen", PROCESSED_FLAG])
    if move_to:
        client.move([uid], move_to)
