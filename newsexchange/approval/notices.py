"""The mail editors (and operators) receive about approvals: requests, reminders, the
"nothing to send" notice, acknowledgements of replies, notes about other editors' decisions.

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

Nothing here talks to a mail server: every mail is written to the mail queue
(:func:`newsexchange.mail.queue.enqueue`) in the caller's transaction, and sent after the
commit by :func:`newsexchange.mail.queue.flush` (the approval step, the pages and the inbound
paths call it), retried there when the relay fails. So a decision, a request or a deadline
is never undone by a mail server, and a mail exists only if what it tells was committed.
"""

from __future__ import annotations

import html as _html
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any, Literal

from newsexchange.approval.addresses import (
    mail_domain,
    plus_address,
    request_message_id,
    subject_tag,
)
from newsexchange.approval.audit import audit
from newsexchange.approval.content import changes, content_with_intro, last_snapshot, snapshot
from newsexchange.approval.rules import EditorNote
from newsexchange.approval.tokens import Action, make_action_token, reply_token
from newsexchange.config import Config, ExchangeSettings
from newsexchange.db import Digest, Session, Source
from newsexchange.db.queries import audit as audit_log
from newsexchange.db.queries.approvals import latest_decisions
from newsexchange.digest.render import render_content, render_digest
from newsexchange.digest.sendable import SourceState, included_count, refusal, why_empty
from newsexchange.digest.states import OPEN, move
from newsexchange.errors import ApprovalError
from newsexchange.i18n import Gettext, gettext_for
from newsexchange.mail.headers import header_text, wire
from newsexchange.mail.queue import enqueue
from newsexchange.templating import environment

__all__ = [
    "RequestKind",
    "action_url",
    "build_request",
    "editor_lang",
    "editor_links",
    "notify_operators",
    "notify_other_editors",
    "queue_notes",
    "send_acknowledgement",
    "send_empty_notice",
    "send_requests",
    "send_unverified_notice",
]

#: The logger these messages always came from (operators filter on it).
log = logging.getLogger("newsexchange.approval.notify")

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
    """From (with the sender name of ``lang``, mail.from_names), To, Subject, Date; every
    header through :func:`~newsexchange.mail.headers.header_text`, one cleaning for all."""
    msg = EmailMessage()
    msg["From"] = header_text(config.mail.sender(lang))
    msg["To"] = header_text(to)
    wire(msg)["Subject"] = header_text(subject)  # data, not structure; folded by mail.headers
    msg["Date"] = format_datetime(datetime.now().astimezone())
    return msg


def _queue(
    session: Session,
    messages: Sequence[tuple[str, EmailMessage]],
    *,
    kind: str,
    digest_id: int | None,
    now: datetime,
) -> None:
    for to, msg in messages:
        enqueue(session, msg, kind=kind, recipient=to, digest_id=digest_id, now=now)


def _insert_banner(html: str, banner: str) -> str:
    """Put the banner first inside <body> (or first of all if the HTML has no body tag)."""
    m = re.search(r"<body[^>]*>", html, re.IGNORECASE)
    if not m:
        return banner + html
    return html[: m.end()] + banner + html[m.end() :]


def _fill_markers(text: str, *, view_url: str, escape: bool) -> str:
    """The per-recipient markers of the rendered digest, filled for an editor's preview."""

    def repl(m: re.Match[str]) -> str:
        url = view_url if m.group(1) == "VIEW_URL" else "#unsubscribe-preview"
        return _html.escape(url, quote=True) if escape else url

    return re.sub(r"%%([A-Z_]+)%%", repl, text)


def _request_context(
    session: Session,
    config: Config,
    digest: Digest,
    editor: str,
    kind: RequestKind,
    rendered: Any,
    links: dict[str, str],
    diff: dict[str, Any] | None,
    *,
    now: datetime,
) -> dict[str, Any]:
    """What the request's banner (``email/approval_request.*``) says."""
    exchange = config.exchange(digest.exchange_id)
    tz = config.exchange_tz(exchange)
    deadline = None
    if digest.approval_requested_at and kind == "reminder":
        deadline = digest.approval_requested_at + timedelta(hours=exchange.approval.deadline_hours)
    elif kind != "reminder":
        deadline = now + timedelta(hours=exchange.approval.deadline_hours)
    return {
        "kind": kind,
        "exchange": exchange.display_name,
        "digest": digest,
        "subject": rendered.subject,
        "items": rendered.items,
        "links": links,
        "required": exchange.approvals_required,
        "approved_by": sorted(
            e
            for e, d in latest_decisions(session, digest.id, digest.version).items()
            if d == "approve"
        ),
        "deadline": deadline.astimezone(tz).strftime("%d.%m.%Y %H:%M %Z") if deadline else None,
        "on_deadline": exchange.approval.on_deadline,
        "valid_days": exchange.approval.link_valid_days,
        "reply_address": plus_address(config, reply_token(config, digest, editor), digest.version),
        "diff": diff,
        "reason": digest.decided_reason,
    }


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
    if rendered is None:
        # Direct links: an editor checking a story is not a reader's click (issue 14).
        rendered = render_digest(session, config, digest, clicks=False)
    links = editor_links(config, digest, editor, now=now)
    ctx = _request_context(session, config, digest, editor, kind, rendered, links, diff, now=now)
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
    msg["Message-ID"] = request_message_id(digest.id, digest.version, mail_domain(config))
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
    """Queue approval requests (or reminders) to the editors, in the caller's transaction;
    returns how many were queued. The digest is ``awaiting_approval`` from now on (not from
    when the mail reaches the relay): the queue retries it until it does."""
    if digest.state not in OPEN:
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
    rendered = render_content(config, exchange, content, digest_id=digest.id, clicks=False)
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
    _queue(session, messages, kind=f"approval_{kind}", digest_id=digest.id, now=now)
    _record_request(
        session, digest, kind, subject=rendered.subject, editors=len(to), snap=snap, now=now
    )
    return len(to)


def _record_request(
    session: Session,
    digest: Digest,
    kind: RequestKind,
    *,
    subject: str,
    editors: int,
    snap: dict[str, Any],
    now: datetime,
) -> None:
    """The digest's clocks, state and audit entry once its requests are queued (the mail is
    as good as sent: the queue retries it until the relay takes it)."""
    if kind == "reminder":
        digest.reminder_sent_at = now
    else:
        digest.approval_requested_at = now
        digest.reminder_sent_at = None
        move(digest, "request")
    if not digest.subject:
        digest.subject = subject
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
        editors=editors,
        **({} if kind == "reminder" else {"snapshot": snap}),
    )
    log.info(
        "approval mail sent",
        extra={"digest": digest.id, "kind": kind, "version": digest.version, "count": editors},
    )


def _source_states(
    session: Session, config: Config, exchange: ExchangeSettings, digest: Digest
) -> list[SourceState]:
    """Whether each of the exchange's sources was fetched since the period began."""
    since = datetime.combine(digest.period_start, datetime.min.time(), tzinfo=UTC)
    states = []
    for src in config.sources:
        if src.region in exchange.from_:
            row = session.get(Source, src.id)
            ok = bool(row and row.last_success_at and row.last_success_at >= since)
            states.append(SourceState(src.id, ok))
    return states


def _empty_notice(
    config: Config,
    exchange: ExchangeSettings,
    digest: Digest,
    editor: str,
    *,
    reasons: list[str],
    states: list[SourceState],
) -> EmailMessage:
    """One editor's "nothing to send" notice, in their language."""
    lang = editor_lang(config, digest, editor)
    _ = gettext_for(lang)
    why = why_empty(reasons, states, _)
    body = (
        environment(lang)
        .get_template("email/period_empty.txt")
        .render(
            exchange=exchange.display_name,
            exchange_id=exchange.id,
            start=digest.period_start.isoformat(),
            end=digest.period_end.isoformat(),
            period=digest.period_start.isoformat(),
            why=why,
            min_items=exchange.min_items,
        )
    )
    subject = _(
        "Nothing to send: %(exchange)s, %(start)s – %(end)s",
        exchange=exchange.display_name,
        start=digest.period_start.isoformat(),
        end=digest.period_end.isoformat(),
    )
    msg = _base_message(config, to=editor, subject=subject, lang=lang)
    msg["Message-ID"] = make_msgid(idstring="nx-empty", domain=mail_domain(config))
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body)
    return msg


def send_empty_notice(session: Session, config: Config, digest: Digest, *, now: datetime) -> bool:
    """Tell the editors, once per digest version, that the period has nothing to send and why
    (in each editor's language). Returns whether the notice went out now."""
    told = audit_log.entries(session, digest.id, actions=("period_empty",))
    if any(e.detail.get("version") == digest.version for e in told):
        return False
    exchange = config.exchange(digest.exchange_id)
    states = _source_states(session, config, exchange, digest)
    reasons = [str(e.reason.get("left_out") or "") for e in digest.entries if not e.included]
    messages = [
        (e, _empty_notice(config, exchange, digest, e, reasons=reasons, states=states))
        for e in exchange.editors
    ]
    _queue(session, messages, kind="period_empty", digest_id=digest.id, now=now)
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
    msg["Message-ID"] = make_msgid(idstring="nx-ack", domain=mail_domain(config))
    if in_reply_to:  # the reply's own Message-ID
        msg["In-Reply-To"] = header_text(in_reply_to)
        msg["References"] = header_text(in_reply_to)
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(text, charset="utf-8")
    _queue(session, [(to, msg)], kind="acknowledgement", digest_id=digest.id, now=now)


def _unverified_text(
    _: Gettext,
    exchange: ExchangeSettings,
    digest: Digest,
    *,
    editor: str,
    reason: str,
    review: str,
) -> str:
    return (
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
    body = _unverified_text(_, exchange, digest, editor=editor, reason=reason, review=review)
    msg = _base_message(
        config,
        to=editor,
        lang=lang,
        subject=_("Not done: your reply about digest %(id)s could not be verified", id=digest.id)
        + f" {subject_tag(reply_token(config, digest, editor))}",
    )
    msg["Message-ID"] = make_msgid(idstring="nx-unverified", domain=mail_domain(config))
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(body, charset="utf-8")
    _queue(session, [(editor, msg)], kind="unverified_notice", digest_id=digest.id, now=now)


def _note_words(
    _: Gettext, exchange: ExchangeSettings, digest: Digest, *, editor: str, decision: str
) -> tuple[str, str, str]:
    """(first line, closing line, subject) of the note about ``editor``'s ``decision``."""
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
        subject = _("%(editor)s asked for changes to digest %(id)s", editor=editor, id=digest.id)
    return head, tail, subject


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
    reason), so nobody approves or edits blind; returns how many were queued. A mail failure
    never undoes the decision (the queue retries it)."""
    exchange = config.exchange(digest.exchange_id)
    others = [e for e in exchange.editors if e != editor]
    messages = []
    for other in others:
        lang = editor_lang(config, digest, other)
        _ = gettext_for(lang)
        review = editor_links(config, digest, other, now=now)["review"]
        head, tail, subject = _note_words(_, exchange, digest, editor=editor, decision=decision)
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
        msg["Message-ID"] = make_msgid(idstring="nx-note", domain=mail_domain(config))
        msg["Reply-To"] = plus_address(config, reply_token(config, digest, other), digest.version)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body, charset="utf-8")
        messages.append((other, msg))
    _queue(session, messages, kind="editor_note", digest_id=digest.id, now=now)
    return len(messages)


def queue_notes(
    session: Session, config: Config, digest: Digest, notes: Sequence[EditorNote], *, now: datetime
) -> int:
    """The notes a decision asks for (:attr:`~newsexchange.approval.decide.DecisionResult.
    notes`), queued in the caller's transaction; returns how many mails."""
    return sum(
        notify_other_editors(
            session,
            config,
            digest,
            editor=n.editor,
            decision=n.decision,
            comment=n.comment,
            now=now,
        )
        for n in notes
    )


def notify_operators(
    session: Session,
    config: Config,
    *,
    subject: str,
    body: str,
    now: datetime,
    digest_id: int | None = None,
) -> int:
    """A plain-text note to mail.operators, queued; returns how many (0 when none set)."""
    ops = list(config.mail.operators)
    if not ops:
        log.warning(
            "no mail.operators configured; operator note not sent", extra={"subject": subject}
        )
        return 0
    messages = []
    for op in ops:
        msg = _base_message(config, to=op, subject=subject)
        msg["Message-ID"] = make_msgid(idstring="nx-ops", domain=mail_domain(config))
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body, charset="utf-8")
        messages.append((parseaddr(op)[1] or op, msg))
    _queue(session, messages, kind="operator_note", digest_id=digest_id, now=now)
    return len(messages)
