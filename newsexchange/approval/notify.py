"""Approval requests, reminders, deadlines and acknowledgements: the mail editors receive.

Each editor gets their own message: the digest exactly as recipients will see it (rendered by
:func:`newsexchange.digest.render.render_digest`), with a banner on top holding Approve /
Request changes / Reject buttons and "Open the review page", each a signed link naming this
digest, this version, this editor and that action (:mod:`newsexchange.approval.tokens`).

Replies work too: Reply-To is a plus-address carrying the digest's reply token and version
(``news+<token>.v3@example.org``), the subject carries ``[nx:<token>]`` and the Message-ID
names the digest and version, so :mod:`newsexchange.approval.inbound` can tell which digest
and version a reply answers whichever of those the editor's mail client keeps.

Requests go out with ``Auto-Submitted: auto-generated`` (RFC 3834) and
``X-Auto-Response-Suppress: All`` (Exchange/Outlook): vacation responders then stay quiet
instead of answering with an out-of-office reply.

Mail is sent inside the caller's transaction, before its commit: if sending fails the
transaction rolls back (the digest stays a draft) and the next :func:`run_approvals` tries
again; if the commit fails after sending, the links mailed are still valid for the version
they name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsexchange.approval.audit import audit
from newsexchange.approval.decide import latest_decisions
from newsexchange.approval.inbound import (
    plus_address,
    poll_imap,  # re-exported: the service resolves its steps in this module
    reply_address_parts,
    request_message_id,
    subject_tag,
)
from newsexchange.approval.tokens import OPEN_STATES, Action, make_action_token, reply_token
from newsexchange.config import Config
from newsexchange.db import AuditEntry, Database, Digest
from newsexchange.digest.sendable import SourceState, included_count, refusal, why_empty
from newsexchange.errors import ApprovalError, DeliveryError, DigestNotFound
from newsexchange.i18n import gettext_for

log = logging.getLogger(__name__)

RequestKind = Literal["request", "reminder", "changed"]


def _subject_prefix(kind: str, lang: str) -> str:
    _ = gettext_for(lang)
    if kind == "reminder":
        return _("Reminder: approval needed")
    if kind == "changed":
        return _("Changed, approve again")
    return _("Approval needed")


def editor_lang(config: Config, digest: Digest, editor: str) -> str:
    """The language ``editor`` reads this digest's approval mails and pages in."""
    return config.editor_language(config.exchange(digest.exchange_id), editor)


def action_url(config: Config, token: str, action: Action) -> str:
    path = "review" if action == "review" else "approve"
    return f"{config.public_url}/{path}/{token}"


def editor_links(config: Config, digest: Digest, editor: str, *, now: datetime) -> dict[str, str]:
    """This editor's signed links for this version of the digest."""
    exchange = config.exchange(digest.exchange_id)
    days = exchange.approval.link_valid_days
    out: dict[str, str] = {}
    for action in ("approve", "changes", "reject", "review"):
        token = make_action_token(
            config,
            digest_id=digest.id,
            version=digest.version,
            editor=editor,
            action=action,  # type: ignore[arg-type]
            now=now,
            valid_days=days,
        )
        out[action] = action_url(config, token, action)  # type: ignore[arg-type]
    return out


def _base_message(
    config: Config, *, to: str, subject: str, lang: str | None = None
) -> EmailMessage:
    """From (with the sender name of ``lang``, mail.from_names), To, Subject, Date."""
    from newsexchange.mailheaders import header_text, wire  # one cleaning for every header

    msg = EmailMessage()
    msg["From"] = header_text(config.mail.sender(lang))
    msg["To"] = header_text(to)
    wire(msg)["Subject"] = header_text(subject)  # data, not structure; folded by mailheaders
    msg["Date"] = format_datetime(datetime.now().astimezone())
    return msg


def _domain(config: Config) -> str:
    return reply_address_parts(config)[1] or "newsexchange.invalid"


def _send(config: Config, messages: Sequence[tuple[str, EmailMessage]]) -> None:
    from newsexchange.delivery.mailers import OutgoingMessage, get_mailer

    if not messages:
        return
    mailer = get_mailer(config)
    try:
        results = mailer.send([OutgoingMessage(message=m, recipient=to) for to, m in messages])
    finally:
        mailer.close()
    failed = [r for r in results if not r.ok]
    if failed:
        raise DeliveryError(
            f"{len(failed)} of {len(results)} approval message(s) could not be sent: "
            f"{failed[0].error}",
            permanent=all(r.permanent for r in failed),
        )


def _insert_banner(html: str, banner: str) -> str:
    """Put the banner first inside <body> (or first of all if the HTML has no body tag)."""
    m = re.search(r"<body[^>]*>", html, re.IGNORECASE)
    if not m:
        return banner + html
    return html[: m.end()] + banner + html[m.end() :]


def _fill_markers(text: str, *, view_url: str, escape: bool) -> str:
    """The per-recipient markers of the rendered digest, filled for an editor's preview."""
    import html as _html

    def repl(m: re.Match[str]) -> str:
        url = view_url if m.group(1) == "VIEW_URL" else "#unsubscribe-preview"
        return _html.escape(url, quote=True) if escape else url

    return re.sub(r"%%([A-Z_]+)%%", repl, text)


def build_request(
    session: Session,
    config: Config,
    digest: Digest,
    editor: str,
    *,
    now: datetime,
    kind: RequestKind = "request",
    rendered: Any = None,
    diff: dict[str, Any] | None = None,
) -> EmailMessage:
    """One editor's approval request (also used for reminders and after a change), in the
    editor's language; ``diff`` (:func:`newsexchange.approval.desk.changes`) is what changed
    since the version they saw."""
    from newsexchange.digest.render import render_digest
    from newsexchange.templating import environment

    exchange = config.exchange(digest.exchange_id)
    if rendered is None:
        rendered = render_digest(session, config, digest)
    links = editor_links(config, digest, editor, now=now)
    tz = config.exchange_tz(exchange)
    deadline = None
    if digest.approval_requested_at and kind == "reminder":
        deadline = digest.approval_requested_at + timedelta(hours=exchange.approval.deadline_hours)
    elif kind != "reminder":
        deadline = now + timedelta(hours=exchange.approval.deadline_hours)
    ctx = {
        "kind": kind,
        "exchange": exchange.display_name,
        "digest": digest,
        "subject": rendered.subject,
        "items": rendered.items,
        "links": links,
        "required": exchange.approvals_required,
        "approved_by": sorted(
            e for e, d in latest_decisions(session, digest).items() if d == "approve"
        ),
        "deadline": deadline.astimezone(tz).strftime("%d.%m.%Y %H:%M %Z") if deadline else None,
        "on_deadline": exchange.approval.on_deadline,
        "valid_days": exchange.approval.link_valid_days,
        "reply_address": plus_address(config, reply_token(config, digest, editor), digest.version),
        "diff": diff,
        "reason": digest.decided_reason,
    }
    lang = editor_lang(config, digest, editor)
    env = environment(lang)
    banner = env.get_template("email/approval_request.html").render(ctx)
    text_head = env.get_template("email/approval_request.txt").render(ctx)
    # "View in browser" of a digest not yet approved would lead nowhere (the archive shows
    # approved digests): in an editor's copy it opens their review page instead.
    view_url = getattr(rendered, "view_url", "") or ""
    html_body, text_body = rendered.html, rendered.text
    if view_url:
        html_body = html_body.replace(view_url, links["review"])
        text_body = text_body.replace(view_url, links["review"])
    html = _insert_banner(_fill_markers(html_body, view_url=links["review"], escape=True), banner)
    text = (
        text_head.rstrip("\n")
        + "\n\n"
        + "=" * 60
        + "\n\n"
        + _fill_markers(text_body, view_url=links["review"], escape=False)
    )
    token = reply_token(config, digest, editor)  # this editor's own: replies act only for them
    subject = f"{_subject_prefix(kind, lang)}: {rendered.subject} {subject_tag(token)}"
    msg = _base_message(config, to=editor, subject=subject, lang=lang)
    msg["Reply-To"] = plus_address(config, token, digest.version)
    msg["Message-ID"] = request_message_id(digest.id, digest.version, _domain(config))
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    return msg


def send_requests(
    session: Session,
    config: Config,
    digest: Digest,
    *,
    now: datetime,
    kind: RequestKind = "request",
    editors: Sequence[str] | None = None,
) -> int:
    """Mail approval requests (or reminders) to the editors; returns how many were sent."""
    from newsexchange.approval.desk import changes, content_with_intro, last_snapshot, snapshot
    from newsexchange.digest.render import render_content

    if digest.state not in OPEN_STATES:
        raise ApprovalError(
            f"digest {digest.id} is {digest.state.replace('_', ' ')}; it needs no approval"
        )
    exchange = config.exchange(digest.exchange_id)
    too_few = refusal(
        included_count((e.included, e.dropped) for e in digest.entries), exchange, digest.id
    )
    if too_few is not None:
        if kind == "changed":  # an editor pressed "Send for approval": say why not
            raise ApprovalError(too_few)
        if kind == "request":  # the build asked: the editors hear once that there is nothing
            send_empty_notice(session, config, digest, now=now)
        return 0
    to = list(editors if editors is not None else exchange.editors)
    content = content_with_intro(session, config, digest)
    rendered = render_content(config, exchange, content, digest_id=digest.id)
    snap = snapshot(content)
    diff = changes(last_snapshot(session, digest), snap) if kind == "changed" else None
    messages = [
        (
            e,
            build_request(
                session, config, digest, e, now=now, kind=kind, rendered=rendered, diff=diff
            ),
        )
        for e in to
    ]
    _send(config, messages)
    if kind == "reminder":
        digest.reminder_sent_at = now
    else:
        digest.approval_requested_at = now
        digest.reminder_sent_at = None
        if digest.state in ("draft", "held", "revising"):
            digest.state = "awaiting_approval"
    if not digest.subject:
        digest.subject = rendered.subject
    audit(
        session,
        digest_id=digest.id,
        actor="newsexchange",
        action={"request": "approval_requested", "reminder": "reminder_sent"}.get(
            kind, "approval_requested_again"
        ),
        channel="email",
        address=None,
        now=now,
        version=digest.version,
        editors=len(to),
        **({} if kind == "reminder" else {"snapshot": snap}),
    )
    log.info(
        "approval mail sent",
        extra={"digest": digest.id, "kind": kind, "version": digest.version, "count": len(to)},
    )
    return len(to)


def send_empty_notice(session: Session, config: Config, digest: Digest, *, now: datetime) -> bool:
    """Tell the editors, once per digest version, that the period has nothing to send and why
    (in each editor's language). Returns whether the notice went out now."""
    told = session.scalars(
        select(AuditEntry.detail).where(
            AuditEntry.digest_id == digest.id, AuditEntry.action == "period_empty"
        )
    )
    if any(d.get("version") == digest.version for d in told):
        return False
    from newsexchange.db import Source
    from newsexchange.templating import environment

    exchange = config.exchange(digest.exchange_id)
    since = datetime.combine(digest.period_start, datetime.min.time(), tzinfo=UTC)
    states = []
    for src in config.sources:
        if src.region in exchange.from_:
            row = session.get(Source, src.id)
            ok = bool(row and row.last_success_at and row.last_success_at >= since)
            states.append(SourceState(src.id, ok))
    reasons = [str(e.reason.get("left_out") or "") for e in digest.entries if not e.included]
    messages = []
    for editor in exchange.editors:
        lang = editor_lang(config, digest, editor)
        _ = gettext_for(lang)
        why = why_empty(reasons, states, _)
        body = environment(lang).get_template("email/period_empty.txt").render(
            exchange=exchange.display_name,
            exchange_id=exchange.id,
            start=digest.period_start.isoformat(),
            end=digest.period_end.isoformat(),
            period=digest.period_start.isoformat(),
            why=why,
            min_items=exchange.min_items,
        )
        subject = _(
            "Nothing to send: %(exchange)s, %(start)s – %(end)s",
            exchange=exchange.display_name,
            start=digest.period_start.isoformat(),
            end=digest.period_end.isoformat(),
        )
        msg = _base_message(config, to=editor, subject=subject, lang=lang)
        msg["Message-ID"] = make_msgid(idstring="nx-empty", domain=_domain(config))
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body)
        messages.append((editor, msg))
    _send(config, messages)
    audit(
        session,
        digest_id=digest.id,
        actor="newsexchange",
        action="period_empty",
        channel="system",
        address=None,
        now=now,
        version=digest.version,
        why=why_empty(reasons, states),
        editors=len(messages),
    )
    return True


def request_approval(db: Database, config: Config, digest_id: int, *, now: datetime) -> int:
    """Mail every editor of the digest's exchange an approval request; state
    awaiting_approval. Returns the number of editors mailed."""
    with db.session() as session:
        digest = session.get(Digest, digest_id)
        if digest is None:
            raise DigestNotFound(digest_id)
        return send_requests(session, config, digest, now=now, kind="request")


def send_acknowledgement(
    session: Session,
    config: Config,
    digest: Digest,
    *,
    to: str,
    ok: bool,
    message: str,
    in_reply_to: str | None,
    now: datetime,
) -> None:
    """Answer an editor's email reply: what it did, or why it did nothing.

    Only ever sent to a verified editor (never to an arbitrary From, which would make us a
    backscatter source); ``Auto-Submitted: auto-replied`` so their responder stays quiet.
    """
    from newsexchange.templating import environment

    exchange = config.exchange(digest.exchange_id)
    if to.strip().lower() not in exchange.editors:
        return
    lang = editor_lang(config, digest, to)
    _ = gettext_for(lang)
    review = editor_links(config, digest, to.strip().lower(), now=now)["review"]
    text = (
        environment(lang)
        .get_template("email/approval_ack.txt")
        .render(
            ok=ok,
            message=message,
            digest=digest,
            exchange=exchange.display_name,
            review_url=review,
        )
    )
    what = _("Done") if ok else _("Not done")
    subject = (
        f"{what}: " + _("digest %(id)s", id=digest.id) + f" ({exchange.display_name}) "
        f"{subject_tag(reply_token(config, digest, to))}"
    )
    msg = _base_message(config, to=to, subject=subject, lang=lang)
    msg["Message-ID"] = make_msgid(idstring="nx-ack", domain=_domain(config))
    if in_reply_to:
        from newsexchange.mailheaders import header_text  # the reply's own Message-ID

        msg["In-Reply-To"] = header_text(in_reply_to)
        msg["References"] = header_text(in_reply_to)
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(text, charset="utf-8")
    try:
        _send(config, [(to, msg)])
    except DeliveryError as exc:  # the decision stands; a missing "done" note is no reason
        log.warning("acknowledgement not sent", extra={"digest": digest.id, "error": str(exc)})


def send_unverified_notice(
    session: Session,
    config: Config,
    digest: Digest,
    *,
    editor: str,
    reason: str,
    now: datetime,
) -> None:
    """Tell an editor, at their configured address (never wherever a reply asks), that a
    reply in their name could not be verified and did nothing, with their review link.

    The genuine editor learns to use the link instead (their mail provider does not sign or
    align their mail); anyone else's forgery is seen by the person it impersonated.
    """
    exchange = config.exchange(digest.exchange_id)
    editor = editor.strip().lower()
    if editor not in exchange.editors:
        return
    review = editor_links(config, digest, editor, now=now)["review"]
    lang = editor_lang(config, digest, editor)
    _ = gettext_for(lang)
    body = (
        _(
            "A reply to the approval request for digest %(id)s (%(exchange)s, version "
            "%(version)s) arrived in your name, %(editor)s, but it could not be verified as "
            "sent by you, so nothing was changed.",
            id=digest.id,
            exchange=exchange.display_name,
            version=digest.version,
            editor=editor,
        )
        + "\n\n"
        + _("Why: %(reason)s", reason=reason)
        + "\n\n"
        + _(
            "If you sent it, your mail provider did not sign it for your domain (DKIM) or send "
            "it from a server your domain allows (SPF). Please use the review page instead:"
        )
        + f"\n{review}\n\n"
        + _(
            "If you did not send it, someone may be trying to act in your name: tell the "
            "operator. The attempt is in the digest's audit log."
        )
        + "\n"
    )
    msg = _base_message(
        config,
        to=editor,
        lang=lang,
        subject=_("Not done: your reply about digest %(id)s could not be verified", id=digest.id)
        + f" {subject_tag(reply_token(config, digest, editor))}",
    )
    msg["Message-ID"] = make_msgid(idstring="nx-unverified", domain=_domain(config))
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(body, charset="utf-8")
    try:
        _send(config, [(editor, msg)])
    except DeliveryError as exc:  # the refusal stands either way
        log.warning(
            "unverified-reply notice not sent", extra={"digest": digest.id, "error": str(exc)}
        )


def notify_other_editors(
    session: Session,
    config: Config,
    digest: Digest,
    *,
    editor: str,
    decision: str,
    comment: str | None,
    now: datetime,
) -> int:
    """Tell the other editors that one rejected the digest or asked for changes (with the
    reason), so nobody approves or edits blind. A mail failure never undoes the decision."""
    exchange = config.exchange(digest.exchange_id)
    others = [e for e in exchange.editors if e != editor]
    messages = []
    for other in others:
        lang = editor_lang(config, digest, other)
        _ = gettext_for(lang)
        review = editor_links(config, digest, other, now=now)["review"]
        if decision == "reject":
            head = _(
                "%(editor)s rejected version %(old)s of digest %(id)s (%(exchange)s, period "
                "%(start)s to %(end)s).",
                editor=editor,
                old=digest.version - 1,
                id=digest.id,
                exchange=exchange.display_name,
                start=digest.period_start,
                end=digest.period_end,
            )
            tail = _(
                "The digest is back with the editors as a draft of version %(version)s: "
                'change it on the review page and press "Send for approval". Nobody is '
                "asked to approve it until then.",
                version=digest.version,
            )
            subject = _("%(editor)s rejected digest %(id)s", editor=editor, id=digest.id)
        else:
            head = _(
                "%(editor)s asked for changes to digest %(id)s (%(exchange)s, period "
                "%(start)s to %(end)s, version %(version)s).",
                editor=editor,
                id=digest.id,
                exchange=exchange.display_name,
                start=digest.period_start,
                end=digest.period_end,
                version=digest.version,
            )
            tail = ""
            subject = _(
                "%(editor)s asked for changes to digest %(id)s", editor=editor, id=digest.id
            )
        body = (
            head
            + "\n"
            + ("\n" + _("Their words:") + f"\n{comment}\n" if comment else "")
            + (f"\n{tail}\n" if tail else "")
            + "\n"
            + _("Review page:")
            + f" {review}\n"
        )
        msg = _base_message(
            config,
            to=other,
            lang=lang,
            subject=f"{subject} {subject_tag(reply_token(config, digest, other))}",
        )
        msg["Message-ID"] = make_msgid(idstring="nx-note", domain=_domain(config))
        msg["Reply-To"] = plus_address(config, reply_token(config, digest, other), digest.version)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body, charset="utf-8")
        messages.append((other, msg))
    try:
        _send(config, messages)
    except DeliveryError as exc:
        log.warning("editor note not sent", extra={"digest": digest.id, "error": str(exc)})
        return 0
    return len(messages)


def notify_operators(config: Config, *, subject: str, body: str) -> int:
    """A plain-text note to mail.operators; returns how many were mailed (0 when none set)."""
    ops = list(config.mail.operators)
    if not ops:
        log.warning(
            "no mail.operators configured; operator note not sent", extra={"subject": subject}
        )
        return 0
    messages = []
    for op in ops:
        msg = _base_message(config, to=op, subject=subject)
        msg["Message-ID"] = make_msgid(idstring="nx-ops", domain=_domain(config))
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body, charset="utf-8")
        messages.append((parseaddr(op)[1] or op, msg))
    _send(config, messages)
    return len(messages)


# -- the step -----------------------------------------------------------------------------------


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
    report = ApprovalRunReport()
    with db.session() as session:
        rows = session.execute(
            select(Digest.id, Digest.state, Digest.exchange_id).where(
                Digest.state.in_(("draft", "awaiting_approval", "revising"))
            )
        ).all()
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
    return report


def _run_one(
    session: Session, config: Config, digest: Digest, *, now: datetime, report: ApprovalRunReport
) -> None:
    exchange = config.exchange(digest.exchange_id)
    settings = exchange.approval
    if digest.state == "revising":
        # A draft with the editors: nobody is asked until one of them sends it for approval,
        # but the deadline (from the last request) still decides if nobody does.
        asked_at = digest.approval_requested_at
        if asked_at and now >= asked_at + timedelta(hours=settings.deadline_hours):
            _deadline(session, config, digest, now=now, report=report)
        return
    if digest.state == "draft" or digest.approval_requested_at is None:
        send_requests(session, config, digest, now=now, kind="request")
        report.requested.append(digest.id)
        return
    if last_requested_version(session, digest) not in (None, digest.version):
        # Rebuilt since the editors were asked (a translation finished, new items): the
        # approvals they give must name this version, so they get this version to approve.
        send_requests(session, config, digest, now=now, kind="changed")
        report.requested.append(digest.id)
        return
    asked = digest.approval_requested_at
    if now >= asked + timedelta(hours=settings.deadline_hours):
        _deadline(session, config, digest, now=now, report=report)
        return
    if digest.reminder_sent_at is None and now >= asked + timedelta(hours=settings.reminder_hours):
        answered = set(latest_decisions(session, digest))
        waiting = [e for e in exchange.editors if e not in answered]
        if waiting:
            send_requests(session, config, digest, now=now, kind="reminder", editors=waiting)
            report.reminded.append(digest.id)
        else:
            digest.reminder_sent_at = now  # everyone answered; nothing to remind


def last_requested_version(session: Session, digest: Digest) -> int | None:
    """The digest version the editors were last asked to approve (from the audit log)."""
    rows = session.scalars(
        select(AuditEntry)
        .where(
            AuditEntry.digest_id == digest.id,
            AuditEntry.action.in_(("approval_requested", "approval_requested_again")),
        )
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(1)
    ).all()
    if not rows:
        return None
    version = (rows[0].detail or {}).get("version")
    return int(version) if isinstance(version, int) else None


def _deadline(
    session: Session, config: Config, digest: Digest, *, now: datetime, report: ApprovalRunReport
) -> None:
    exchange = config.exchange(digest.exchange_id)
    settings = exchange.approval
    approved = sorted(e for e, d in latest_decisions(session, digest).items() if d == "approve")
    if settings.on_deadline == "reject":
        digest.state = "rejected"
        report.rejected.append(digest.id)
    else:
        digest.state = "held"
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
        config,
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


__all__ = [
    "ApprovalRunReport",
    "build_request",
    "editor_links",
    "notify_operators",
    "poll_imap",
    "request_approval",
    "run_approvals",
    "send_acknowledgement",
    "send_requests",
    "send_unverified_notice",
]
