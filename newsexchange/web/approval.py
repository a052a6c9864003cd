"""Web pages of the approval: confirm an action link, the review page, the inbound webhook.

- ``GET /approve/{token}`` shows what the link will do and a button; it changes nothing, so
  mail scanners and link previews that open every link cannot approve anything.
- ``POST /approve/{token}`` acts: the form carries a CSRF value derived from the link with
  our key; the link is checked (signature, expiry, digest, version, editor, state) and
  marked used in the same transaction as the decision.
- ``GET /review/{token}`` shows the digest with per-item Drop / Pin / Up / Down and a
  translation editor; ``POST`` applies one change (any change makes a new version, voids
  earlier approvals and mails fresh requests). The form names the version it was made from,
  so two editors changing at once cannot act on a numbering that no longer exists. A review
  link acts only on the version it was mailed for: an older version's link shows the current
  digest read-only and its POSTs are refused (409). Approving consumes the link; an edit
  continues on a fresh link for the version it made (same editor, same expiry).
- ``POST /inbound/sendgrid`` (or ``/inbound/sendgrid/{secret}``): SendGrid Inbound Parse.
  HTTP basic auth (the password) or the URL token must equal the secret in the environment
  variable named by ``mail.sendgrid.inbound_secret_env``: none given → 401, wrong → 403,
  nothing changes. Without the variable set, the webhook is off (503). A malformed
  ``envelope`` field is a 400 with the reason.

Every page sends ``Referrer-Policy: no-referrer`` (the token is in the URL and the review
page links to news sites), ``Cache-Control: no-store`` and a CSP that forbids framing.

The handlers are plain module-level functions: each reads the config, the database and the
clock from the app (:mod:`newsexchange.web.deps`) and hands them to a synchronous function
run in the thread pool. The mail a page's decision queued (notes to the other editors,
fresh requests) is sent after its commit (:func:`newsexchange.mail.queue.flush`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from newsexchange.approval.audit import audit
from newsexchange.approval.content import (
    changes,
    content_with_intro,
    current_intro,
    last_snapshot,
    snapshot,
)
from newsexchange.approval.decide import apply_edit, decide, latest_decisions
from newsexchange.approval.desk import set_intro, start_revision, submit
from newsexchange.approval.inbound import InboundFormatError, from_sendgrid, process_inbound
from newsexchange.approval.notices import queue_notes
from newsexchange.approval.tokens import (
    ActionClaims,
    TokenError,
    check_against_digest,
    check_csrf,
    csrf_value,
    is_used,
    make_action_token,
    mark_used,
    read_action_token,
)
from newsexchange.config import Config
from newsexchange.db import Database, Digest, Session
from newsexchange.db.queries.approvals import (
    IntegrityError,
    delivery_counts,
    delivery_emails,
    suppressions_since,
)
from newsexchange.digest import item_text
from newsexchange.digest.render import content_hash, digest_content, render_content, render_digest
from newsexchange.digest.states import OPEN
from newsexchange.errors import ApprovalError, DigestError, NewsExchangeError
from newsexchange.i18n import gettext_for
from newsexchange.mail.queue import flush
from newsexchange.service.queue import start_sending_if_approved
from newsexchange.templating import environment
from newsexchange.translate.memory import set_editor_translation
from newsexchange.web.deps import config_of, db_of
from newsexchange.web.deps import now as request_now
from newsexchange.web.limits import BodyTooLarge, capped_request

__all__ = ["SECURITY_HEADERS", "routes"]

#: The logger these messages always came from (operators filter on it).
log = logging.getLogger("newsexchange.approval.web")

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
_ACTION_LABEL = {"approve": "Approve", "reject": "Reject", "changes": "Request changes"}


def _page(template: str, status: int = 200, *, lang: str | None = None, **ctx: Any) -> HTMLResponse:

    html = environment(lang).get_template(template).render(**ctx)
    headers = dict(SECURITY_HEADERS)
    if template == "web/review.html":  # the desk frames its own preview
        headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
            "default-src 'none';", "default-src 'none'; frame-src 'self';"
        )
    return HTMLResponse(html, status_code=status, headers=headers)


def _error(
    exc: TokenError | NewsExchangeError, status: int | None = None, *, lang: str | None = None
) -> HTMLResponse:
    kind = exc.kind if isinstance(exc, TokenError) else "refused"
    message = exc.localized(lang) if isinstance(exc, TokenError) else str(exc)
    code = status or (exc.status if isinstance(exc, TokenError) else 409)
    return _page("web/token_error.html", code, lang=lang, kind=kind, message=message)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def view_of(config: Config, session: Session, digest: Digest) -> dict[str, Any]:

    exchange = config.exchange(digest.exchange_id)
    rendered = render_digest(session, config, digest)
    tz = config.exchange_tz(exchange)
    return {
        "digest": digest,
        "exchange": exchange,
        "subject": rendered.subject,
        "items": rendered.items,
        "approved_by": sorted(
            e for e, d in latest_decisions(session, digest).items() if d == "approve"
        ),
        "required": exchange.approvals_required,
        "requested": digest.approval_requested_at.astimezone(tz).strftime("%d.%m.%Y %H:%M")
        if digest.approval_requested_at
        else None,
    }


def load(config: Config, session: Session, claims: ActionClaims, **kw: Any) -> Digest:
    digest: Digest | None = session.get(Digest, claims.digest_id)
    editors = config.exchange(digest.exchange_id).editors if digest else []
    check_against_digest(claims, digest, editors=editors, **kw)
    assert digest is not None
    return digest


# -- one-click actions ----------------------------------------------------------------


def fresh_review_token(config: Config, digest: Digest, editor: str, now: datetime) -> str:
    """A new review link for the digest's current version, valid as long as a mailed one."""
    return make_action_token(
        config,
        digest_id=digest.id,
        version=digest.version,
        editor=editor,
        action="review",
        now=now,
        valid_days=config.exchange(digest.exchange_id).approval.link_valid_days,
    )


def confirm_page(config: Config, db: Database, token: str, now: datetime) -> HTMLResponse:
    try:
        claims = read_action_token(config, token, now=now)
        if claims.action == "review":
            return RedirectResponse(f"/review/{token}", 303, headers=SECURITY_HEADERS)  # type: ignore[return-value]
        with db.session() as session:
            if is_used(session, claims.jti):
                raise TokenError(
                    "used", "This link has already been used; nothing was changed.", status=409
                )
            digest = load(config, session, claims)
            view = view_of(config, session, digest)
            review = fresh_review_token(config, digest, claims.editor, now)
            return _page(
                "web/approval_confirm.html",
                lang=config.editor_language(config.exchange(digest.exchange_id), claims.editor),
                action=claims.action,
                label=_ACTION_LABEL[claims.action],
                editor=claims.editor,
                csrf=csrf_value(config, token),
                review_url=f"/review/{review}",
                **view,
            )
    except (TokenError, ApprovalError) as exc:
        return _error(exc, lang=lang_for(config, db, claims_or_none(config, token, now)))


def claims_or_none(config: Config, token: str, now: datetime) -> ActionClaims | None:
    try:
        return read_action_token(config, token, now=now)
    except TokenError:
        return None


def _confirm_decide(
    config: Config,
    db: Database,
    session: Session,
    claims: ActionClaims,
    comment: str | None,
    address: str,
    now: datetime,
) -> HTMLResponse:
    """The confirmed link's decision, with the notes it asks for queued; the page saying so."""
    digest = load(config, session, claims)
    mark_used(session, claims.jti, now=now)
    result = decide(
        session,
        config,
        digest,
        editor=claims.editor,
        decision=claims.action,
        channel="web",
        address=address,
        comment=comment,
        now=now,
    )
    queue_notes(session, config, digest, result.notes, now=now)
    view = view_of(config, session, digest)
    desk_url = None
    if digest.state == "revising":  # rejected: the draft of the next version
        desk = fresh_review_token(config, digest, claims.editor, now)
        desk_url = f"/review/{desk}"
    return _page(
        "web/approval_done.html",
        lang=lang_for(config, db, claims, digest),
        result=result,
        desk_url=desk_url,
        **view,
    )


def confirm_act(
    config: Config, db: Database, token: str, form: dict[str, str], now: datetime, address: str
) -> HTMLResponse:
    if not check_csrf(config, token, form.get("csrf")):
        lang = lang_for(config, db, claims_or_none(config, token, now))
        _ = gettext_for(lang)
        return _page(
            "web/token_error.html",
            403,
            lang=lang,
            kind="csrf",
            message=_(
                "This form is not valid (it did not come from the confirmation page). "
                "Open the link from the email again."
            ),
        )
    claims: ActionClaims | None = None
    try:
        claims = read_action_token(config, token, now=now)
        if claims.action == "review":
            raise TokenError("tampered", "This link cannot approve or reject.")
        comment = (form.get("comment") or "").strip() or None
        if claims.action == "reject" and not comment:
            _ = gettext_for(lang_for(config, db, claims))
            raise ApprovalError(
                _("Please give a reason for rejecting (it goes to the other editors).")
            )
        with db.session() as session:
            page = _confirm_decide(config, db, session, claims, comment, address, now)
        flush(db, config, now=now)  # the notes to the other editors, after the commit
        start_sending_if_approved(config, db, claims.digest_id)
        return page
    except (TokenError, ApprovalError) as exc:
        refuse_logged(db, claims, exc, address, now)
        return _error(exc, lang=lang_for(config, db, claims))
    except IntegrityError:
        # Two clicks racing: the used_tokens primary key let exactly one of them act.
        used = TokenError(
            "used", "This link has already been used; nothing was changed.", status=409
        )
        refuse_logged(db, claims, used, address, now)
        return _error(used)


def refuse_logged(
    db: Database, claims: ActionClaims | None, exc: Exception, address: str, now: datetime
) -> None:
    """A refused POST of a genuine (signed) link goes to the audit log, in its own
    transaction: the one that refused was rolled back. Forged links name nobody."""
    if claims is None:
        return
    try:
        with db.session() as session:
            if session.get(Digest, claims.digest_id) is None:
                return
            audit(
                session,
                digest_id=claims.digest_id,
                actor=claims.editor,
                action=f"{claims.action}_refused",
                channel="web",
                address=address,
                now=now,
                reason=getattr(exc, "kind", None) or str(exc)[:200],
                version=claims.version,
            )
    except Exception:  # the page must still answer
        log.exception("could not log a refused link")


async def approve_get(request: Request) -> Response:
    config, db = config_of(request), db_of(request)
    token = request.path_params["token"]
    return await run_in_threadpool(confirm_page, config, db, token, request_now(request))


async def approve_post(request: Request) -> Response:
    config, db = config_of(request), db_of(request)
    token = request.path_params["token"]
    form = await request.form()
    data = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    return await run_in_threadpool(
        confirm_act, config, db, token, data, request_now(request), _client(request)
    )


# -- the review page ----------------------------------------------------------------------


def review_claims(config: Config, token: str, now: datetime) -> ActionClaims:
    claims = read_action_token(config, token, now=now)
    if claims.action != "review":
        raise TokenError("tampered", "This link is not a review link.")
    return claims


def refuse_used(session: Session, claims: ActionClaims) -> None:
    if is_used(session, claims.jti):
        raise TokenError(
            "used",
            "This link has already been used to approve; nothing was changed. Later "
            "versions come with a fresh approval request.",
            status=409,
        )


def older_version(claims: ActionClaims, digest: Digest, view: dict[str, Any]) -> TokenError:
    if view.get("requested"):
        return TokenError(
            "stale_version",
            "This link is for version %(link)s of the digest, which is now version "
            "%(now)s: it cannot approve or change version %(now)s. Use the "
            "links in the latest approval request for version %(now)s (mailed %(when)s).",
            status=409,
            link=claims.version,
            now=digest.version,
            when=view["requested"],
        )
    return TokenError(
        "stale_version",
        "This link is for version %(link)s of the digest, which is now version "
        "%(now)s: it cannot approve or change version %(now)s. Use the "
        "links in the latest approval request for version %(now)s.",
        status=409,
        link=claims.version,
        now=digest.version,
    )


def lang_for(
    config: Config, db: Database, claims: ActionClaims | None, digest: Digest | None = None
) -> str | None:
    if claims is None:
        return None
    if digest is None:
        with db.session() as session:
            digest = session.get(Digest, claims.digest_id)
            if digest is None:
                return None
            return config.editor_language(config.exchange(digest.exchange_id), claims.editor)
    return config.editor_language(config.exchange(digest.exchange_id), claims.editor)


def desk_view(config: Config, session: Session, digest: Digest, token: str) -> dict[str, Any]:

    entries = {e.item_id: e for e in digest.entries}
    left_out = [
        {
            "item_id": e.item_id,
            "title": item_text(e.item, digest.language)[0],
            "source_name": _source_name(config, e.item.source_id),
            "dropped": e.dropped,
            "reason": e.reason.get("left_out") if isinstance(e.reason, dict) else None,
        }
        for e in sorted(digest.entries, key=lambda e: (not e.dropped, e.item_id))
        if not e.included
    ][:30]
    content = content_with_intro(session, config, digest)
    return {
        "pinned": {i for i, e in entries.items() if e.pinned and e.included},
        "left_out": left_out,
        "intro": current_intro(session, digest).get(digest.language, ""),
        "diff": changes(last_snapshot(session, digest), snapshot(content)),
        "preview_url": f"/review/{token}/preview",
    }


def _source_name(config: Config, source_id: str) -> str:
    for src in config.sources:
        if src.id == source_id:
            return src.display_name
    return source_id


def status_view(config: Config, session: Session, digest: Digest) -> dict[str, Any]:

    exchange = config.exchange(digest.exchange_id)
    tz = config.exchange_tz(exchange)
    by_status = delivery_counts(session, digest.id)
    emails = delivery_emails(session, digest.id)
    since = digest.approved_at or digest.created_at
    sups = suppressions_since(session, since)
    bounced = {x.email.lower() for x in sups if x.reason == "bounced"} & emails
    unsubscribed = {x.email.lower() for x in sups if x.reason == "unsubscribed"} & emails
    when = digest.sent_at or digest.approved_at
    return {
        "total": sum(by_status.values()),
        "sent": by_status.get("sent", 0),
        "failed": by_status.get("failed", 0),
        "pending": sum(by_status.get(k, 0) for k in ("pending", "claimed", "retrying")),
        "suppressed": by_status.get("suppressed", 0),
        "bounced": len(bounced),
        "unsubscribed": len(unsubscribed),
        "when": when.astimezone(tz).strftime("%d.%m.%Y %H:%M %Z") if when else None,
        "archive_url": f"/digests/{digest.id}",
    }


def status_page(
    config: Config, db: Database, claims: ActionClaims, now: datetime, token: str | None = None
) -> HTMLResponse | None:
    """After the decision, the review link shows what went out and how (read-only); with
    the editor's review ``token``, its impact link lets them confirm or reject pick-ups."""
    with db.session() as session:
        digest: Digest | None = session.get(Digest, claims.digest_id)
        if digest is None or digest.state in OPEN:
            return None
        exchange = config.exchange(digest.exchange_id)
        if claims.editor not in exchange.editors:
            return None
        lang = config.editor_language(exchange, claims.editor)
        return _page(
            "web/status.html",
            lang=lang,
            editor=claims.editor,
            **view_of(config, session, digest),
            **status_view(config, session, digest),
            impact_url=f"/impact/{digest.id}?t={token}" if token else f"/impact/{digest.id}",
        )


def review_page(
    config: Config, db: Database, token: str, now: datetime, done: str | None
) -> HTMLResponse:
    claims: ActionClaims | None = None
    try:
        claims = review_claims(config, token, now)
        status = status_page(config, db, claims, now, token)
        if status is not None:
            return status
        with db.session() as session:
            refuse_used(session, claims)
            digest = load(config, session, claims, allow_older_version=True)
            view = view_of(config, session, digest)
            # An older version's link shows the current digest, read-only: a review link
            # acts only on the version it was mailed for.
            stale = older_version(claims, digest, view) if claims.version < digest.version else None
            return _page(
                "web/review.html",
                lang=lang_for(config, db, claims, digest),
                editor=claims.editor,
                csrf=csrf_value(config, token),
                done=done,
                stale=stale.message if stale else None,
                **view,
                **desk_view(config, session, digest, token),
            )
    except (TokenError, ApprovalError) as exc:
        return _error(exc, lang=lang_for(config, db, claims))


def preview_page(config: Config, db: Database, token: str, now: datetime) -> Response:
    """The digest mail as journalists will see it (server-rendered, framed by the desk)."""

    try:
        claims = review_claims(config, token, now)
        with db.session() as session:
            digest = load(config, session, claims, allow_older_version=True)
            content = content_with_intro(session, config, digest)
            rendered = render_content(
                config,
                config.exchange(digest.exchange_id),
                content,
                digest_id=digest.id,
                clicks=False,  # the editors' preview: their clicks are not readers'
            )
            html = rendered.html.replace("%%VIEW_URL%%", "#").replace("%%UNSUBSCRIBE_URL%%", "#")
    except (TokenError, ApprovalError) as exc:
        return _error(exc)
    headers = {
        **SECURITY_HEADERS,
        "X-Frame-Options": "SAMEORIGIN",
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
            "form-action 'none'; frame-ancestors 'self'; base-uri 'none'"
        ),
    }
    return HTMLResponse(html, headers=headers)


def review_act(
    config: Config, db: Database, token: str, form: dict[str, str], now: datetime, address: str
) -> Response:
    if not check_csrf(config, token, form.get("csrf")):
        lang = lang_for(config, db, claims_or_none(config, token, now))
        _ = gettext_for(lang)
        return _page(
            "web/token_error.html",
            403,
            lang=lang,
            kind="csrf",
            message=_("This form is not valid (it did not come from the review page)."),
        )
    claims: ActionClaims | None = None
    op = form.get("op", "")
    try:
        claims = review_claims(config, token, now)
        with db.session() as session:
            digest = _desk_digest(config, session, claims, form)
            done = _desk_change(config, db, session, digest, claims, op, form, address, now)
            response: Response
            if isinstance(done, str):
                next_token = _next_review_token(config, digest, claims, token, now)
                response = RedirectResponse(
                    f"/review/{next_token}?done={done}", 303, headers=SECURITY_HEADERS
                )
            else:
                response = done
        flush(db, config, now=now)  # requests and notes the change queued, after the commit
        if op == "approve":
            start_sending_if_approved(config, db, claims.digest_id)
        return response
    except (TokenError, ApprovalError, DigestError) as exc:
        if op == "approve":
            refuse_logged(db, claims, exc, address, now)
        return _error(exc, lang=lang_for(config, db, claims))
    except IntegrityError:
        used = TokenError(
            "used", "This link has already been used; nothing was changed.", status=409
        )
        refuse_logged(db, claims, used, address, now)
        return _error(used, lang=lang_for(config, db, claims))
    except NewsExchangeError as exc:  # a translation the memory refused, …
        return _error(exc, 400, lang=lang_for(config, db, claims))


def _desk_digest(
    config: Config, session: Session, claims: ActionClaims, form: dict[str, str]
) -> Digest:
    """The digest a review form acts on: its link unused, for the current version, and the
    form made from that version."""
    refuse_used(session, claims)
    digest = load(config, session, claims, allow_older_version=True)
    if claims.version != digest.version:
        raise older_version(claims, digest, view_of(config, session, digest))
    if str(digest.version) != form.get("version"):
        raise TokenError(
            "stale_version",
            "The digest changed while you were looking at it (it is now version "
            "%(now)s); reload the review page and try again.",
            status=409,
            now=digest.version,
        )
    return digest


def _desk_change(
    config: Config,
    db: Database,
    session: Session,
    digest: Digest,
    claims: ActionClaims,
    op: str,
    form: dict[str, str],
    address: str,
    now: datetime,
) -> HTMLResponse | str:
    """Apply the review form's ``op``: the page to show (an approval), or what was done."""
    if op not in ("approve", "reject", "changes"):
        return _review_op(config, session, digest, op, form, claims.editor, address, now)
    lang = lang_for(config, db, claims, digest)
    comment = (form.get("comment") or "").strip() or None
    if op == "reject" and not comment:
        _ = gettext_for(lang)
        raise ApprovalError(_("Please give a reason for rejecting (it goes to the other editors)."))
    if op == "approve":
        # Approving consumes the link, as the one-click approve link does.
        mark_used(session, claims.jti, now=now)
    result = decide(
        session,
        config,
        digest,
        editor=claims.editor,
        decision=op,
        channel="web",
        address=address,
        comment=comment,
        now=now,
    )
    queue_notes(session, config, digest, result.notes, now=now)
    if op == "approve":
        return _page(
            "web/approval_done.html",
            lang=lang,
            result=result,
            desk_url=None,
            **view_of(config, session, digest),
        )
    return op


def _next_review_token(
    config: Config, digest: Digest, claims: ActionClaims, token: str, now: datetime
) -> str:
    """A change that made a new version (a rejection, the first edit of a version the editors
    saw) continues on a link for that version (same editor, same expiry): the old link stays
    bound to its own version."""
    if digest.version == claims.version:
        return token
    return make_action_token(
        config,
        digest_id=digest.id,
        version=digest.version,
        editor=claims.editor,
        action="review",
        now=now,
        valid_days=(claims.expires_at - now).total_seconds() / 86400,
    )


def _items_for(op: str, item_id: int, digest: Digest) -> tuple[list[Any], dict[int, Any]]:
    """The digest's included entries (in order, and by item id), once ``op`` on ``item_id``
    is known to make sense on this version."""
    included = sorted((e for e in digest.entries if e.included), key=lambda e: e.position)
    by_item = {e.item_id: e for e in included}
    if op in ("drop", "pin", "unpin", "up", "down", "translate") and item_id not in by_item:
        raise ApprovalError(f"item {item_id} is not in this digest (reload the page)")
    if op == "restore" and item_id not in {e.item_id for e in digest.entries if not e.included}:
        raise ApprovalError(f"item {item_id} is not left out of this digest (reload the page)")
    return included, by_item


def _edit_of(
    op: str, item_id: int, by_item: dict[int, Any], included: list[Any]
) -> dict[str, Any] | None:
    """The :func:`~newsexchange.approval.decide.apply_edit` arguments of a desk ``op`` on
    ``item_id`` (None: a move past either end, nothing to do)."""
    pos = by_item[item_id].position if item_id in by_item else 0
    if op in ("drop", "pin", "unpin"):
        return {op: [pos]}
    if op == "restore":
        return {"restore": [item_id]}
    positions = [e.position for e in included]
    i = positions.index(pos)
    j = i - 1 if op == "up" else i + 1
    if not 0 <= j < len(positions):
        return None
    order = list(positions)
    order[i], order[j] = order[j], order[i]
    return {"order": order}


def _review_op(
    config: Config,
    session: Session,
    digest: Digest,
    op: str,
    form: dict[str, str],
    editor: str,
    address: str,
    now: datetime,
) -> str:
    """One change on the desk. Changes accumulate on a draft of the next version and mail
    nobody; "submit" (Send for approval) mails each other editor once."""

    if op == "submit":
        submit(session, config, digest, editor=editor, address=address, now=now)
        return "submit"
    if op not in ("drop", "restore", "pin", "unpin", "up", "down", "translate", "intro"):
        raise ApprovalError(f"unknown change {op!r}")
    try:
        item_id = int(form.get("item_id", "0") or "0")
    except ValueError:
        raise ApprovalError("item_id must be a number") from None
    included, by_item = _items_for(op, item_id, digest)
    revised = start_revision(
        session, digest, editor=editor, channel="web", address=address, now=now
    )
    if op == "intro":
        changed = set_intro(
            session,
            digest,
            language=digest.language,
            text=form.get("intro") or "",
            editor=editor,
            channel="web",
            address=address,
            now=now,
        )
        return "intro" if changed or revised else "unchanged"
    if op == "translate":
        return _translate(config, session, digest, form, editor, address, now, revised)
    kw = _edit_of(op, item_id, by_item, included)
    if kw is None:  # moving the first item up or the last one down
        return op if revised else "unchanged"
    changed = apply_edit(
        session, config, digest, editor=editor, channel="web", address=address, now=now, **kw
    )
    return op if changed or revised else "unchanged"


def _translate(
    config: Config,
    session: Session,
    digest: Digest,
    form: dict[str, str],
    editor: str,
    address: str,
    now: datetime,
    revised: bool,
) -> str:

    item_id = int(form.get("item_id", "0") or "0")
    title = (form.get("title") or "").strip()
    summary = (form.get("summary") or "").strip()
    if not title:
        raise ApprovalError("the translated title cannot be empty")
    before = content_hash(digest_content(session, config, digest))
    set_editor_translation(session, item_id, digest.language, title=title, summary=summary, now=now)
    session.flush()
    session.expire_all()  # re-read the item's translations
    reread = session.get(Digest, digest.id)
    assert reread is not None  # the row is locked by this transaction
    digest = reread
    after = content_hash(digest_content(session, config, digest))
    if before == after:
        return "translate" if revised else "unchanged"
    if digest.state != "revising":  # a draft nobody saw yet: still a new version
        digest.version += 1
    audit(
        session,
        digest_id=digest.id,
        actor=editor,
        action="edit_translation",
        channel="web",
        address=address,
        now=now,
        version=digest.version,
        item_id=item_id,
        language=digest.language,
    )
    return "translate"


async def review_get(request: Request) -> Response:
    config, db = config_of(request), db_of(request)
    done = request.query_params.get("done")
    return await run_in_threadpool(
        review_page, config, db, request.path_params["token"], request_now(request), done
    )


async def preview_get(request: Request) -> Response:
    config, db = config_of(request), db_of(request)
    return await run_in_threadpool(
        preview_page, config, db, request.path_params["token"], request_now(request)
    )


async def review_post(request: Request) -> Response:
    config, db = config_of(request), db_of(request)
    form = await request.form()
    data = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    return await run_in_threadpool(
        review_act,
        config,
        db,
        request.path_params["token"],
        data,
        request_now(request),
        _client(request),
    )


# -- SendGrid Inbound Parse -----------------------------------------------------------------


def inbound_auth(request: Request) -> Response | None:
    config = config_of(request)
    secret = config.secret(config.mail.sendgrid.inbound_secret_env)
    if not secret:
        return JSONResponse(
            {
                "ok": False,
                "error": "inbound webhook disabled: "
                f"{config.mail.sendgrid.inbound_secret_env} is not set",
            },
            503,
        )
    given: str | None = request.path_params.get("secret") or request.query_params.get("token")
    header = request.headers.get("authorization", "")
    if given is None and header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
            given = decoded.partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            given = ""
    if given is None:
        return JSONResponse(
            {"ok": False, "error": "authentication required"},
            401,
            headers={"WWW-Authenticate": 'Basic realm="newsexchange inbound"'},
        )
    if not hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8")):
        log.warning("inbound webhook: wrong secret", extra={"client": _client(request)})
        return JSONResponse({"ok": False, "error": "forbidden"}, 403)
    return None


async def inbound_sendgrid(request: Request) -> Response:
    config, db = config_of(request), db_of(request)

    refused = inbound_auth(request)
    if refused is not None:
        return refused
    # The whole post is capped before it is parsed (mail.sendgrid.inbound_max_bytes,
    # 20 MB by default): an approval reply is a few kB, and the URL is public.
    limit = config.mail.sendgrid.inbound_max_bytes
    try:
        request = await capped_request(request, limit, setting="mail.sendgrid.inbound_max_bytes")
    except BodyTooLarge as exc:
        return JSONResponse({"ok": False, "error": str(exc)}, 413, headers={"Connection": "close"})
    # Starlette's default part limit is 1 MB; any part may be as large as the whole post.
    form = await request.form(max_files=100, max_fields=200, max_part_size=limit)
    data = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    try:
        msg = from_sendgrid(data)
    except InboundFormatError as exc:
        # Not what SendGrid posts: say so, change nothing.
        return JSONResponse({"ok": False, "error": str(exc)}, 400)
    result = await run_in_threadpool(
        process_inbound, db, config, msg, now=request_now(request), via="sendgrid"
    )
    # 200 whatever we decided: SendGrid retries anything else, and a refusal is final.
    return JSONResponse({"ok": True, **result.to_json()})


def routes(config: Config, db: Database) -> list[BaseRoute]:
    """The approval pages and the inbound webhook (handlers read the config, the database
    and the clock from the app: :mod:`newsexchange.web.deps`)."""
    return [
        Route("/approve/{token}", approve_get, methods=["GET", "HEAD"]),
        Route("/approve/{token}", approve_post, methods=["POST"]),
        Route("/review/{token}", review_get, methods=["GET", "HEAD"]),
        Route("/review/{token}", review_post, methods=["POST"]),
        Route("/review/{token}/preview", preview_get, methods=["GET", "HEAD"]),
        Route("/inbound/sendgrid", inbound_sendgrid, methods=["POST"]),
        Route("/inbound/sendgrid/{secret}", inbound_sendgrid, methods=["POST"]),
    ]
