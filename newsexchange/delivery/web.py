"""Web routes of delivery: the unsubscribe page (RFC 8058 one-click) and SendGrid's Event
Webhook.

Unsubscribe: ``GET /unsubscribe/{token}`` (and ``HEAD``, which Starlette answers with the
GET handler) only shows a page with a button, because mail scanners and link previewers fetch
every URL in a message and must not unsubscribe anyone; every other method but POST is 405.
``POST /unsubscribe/{token}`` unsubscribes when its body asks for it: the RFC 8058 one-click
request a mail client sends by itself (``List-Unsubscribe=One-Click``, urlencoded or
multipart/form-data, RFC 8058 §3.2), or the page's own button (``confirm=1``). Any other POST
changes nothing (400, the page again). No login, no cookie, no CSRF token: the signed token is
the authority, and it can only ever unsubscribe the address it names. No redirect either:
one-click clients do not follow them.

Event Webhook: SendGrid signs each POST with ECDSA P-256 over ``timestamp + body``
(headers ``X-Twilio-Email-Event-Webhook-Signature`` / ``-Timestamp``); the public key is read
from the environment variable named by ``mail.sendgrid.webhook_public_key_env``. Unsigned
or mis-signed requests get 403 and change nothing, and so do signed ones whose timestamp is
more than ``mail.sendgrid.webhook_max_age_seconds`` (300) from the app's clock, either way:
a captured request cannot be replayed later. The body is capped
(``mail.sendgrid.webhook_max_bytes``, 413 beyond it). A body that is not a JSON array of
events we can read (nested too deeply, a delivery id out of range, an id that is not a
string) is 400 with the reason, and nothing of it is applied. Each event is applied once (its
``sg_event_id`` is kept in ``provider_events``), so SendGrid's retries are harmless.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from newsexchange.config import Config
from newsexchange.db import Database, Delivery, ProviderEvent, Suppression, utcnow
from newsexchange.delivery.tokens import email_hash, read_token, suppress
from newsexchange.i18n import gettext_for
from newsexchange.mail.sendgrid import CUSTOM_ARG
from newsexchange.web.limits import BodyTooLarge, read_body, too_large

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# An unsubscribe POST carries one short field; anything bigger is not one.
UNSUBSCRIBE_MAX_BYTES = 16 * 1024
# Delivery ids are INTEGER primary keys (32-bit signed on PostgreSQL).
MAX_DELIVERY_ID = 2**31 - 1


def texts(language: str | None) -> dict[str, str]:
    """The unsubscribe pages' texts in ``language`` (the gettext catalogues); the values
    ``{list}`` and ``{email}`` are filled by the caller."""
    _ = gettext_for(language)
    return {
        "title": _("Unsubscribe"),
        "question": _("Stop sending %(list)s to %(email)s?", list="{list}", email="{email}"),
        "button": _("Unsubscribe"),
        "note": _("Nothing changes until you press the button."),
        "done_title": _("You are unsubscribed"),
        "done": _("%(email)s will get no more mail from %(list)s.", list="{list}", email="{email}"),
        "already": _(
            "%(email)s was already unsubscribed from %(list)s.", list="{list}", email="{email}"
        ),
        "invalid_title": _("This link does not work"),
        "invalid": _(
            "The unsubscribe link is damaged or was not made by us. Reply to any of our mails "
            "and we will remove you by hand."
        ),
        "all_lists": _("all our lists"),
        "not_asked": _("Nothing changed: this request did not ask to unsubscribe."),
    }


def _now(request: Request) -> datetime:
    clock = getattr(request.app.state, "clock", None)
    return clock() if callable(clock) else utcnow()


def _page(name: str, status: int = 200, *, lang: str, **ctx: Any) -> HTMLResponse:
    from newsexchange.templating import environment

    body = environment(lang).get_template(f"web/{name}").render(**ctx)
    # The token is in our URL: never leak it to another site, never cache the page.
    return HTMLResponse(
        body,
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _is_suppressed(session: Session, email: str, list_id: str | None) -> bool:
    rows = session.scalars(
        select(Suppression).where(Suppression.email.in_([email, email_hash(email)]))
    ).all()
    return any(s.list_id is None or s.list_id == list_id for s in rows)


def routes(config: Config, db: Database) -> list[BaseRoute]:
    def texts_for(list_id: str | None) -> tuple[str, dict[str, str], str]:
        settings = config.lists.get(list_id) if list_id else None
        lang = settings.language if settings else "en"
        t = texts(lang)
        list_name = (settings.name_in(lang) or list_id) if settings and list_id else t["all_lists"]
        return lang, t, list_name

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        tok = read_token(config, token)
        if tok is None:
            t = texts("en")
            return _page(
                "unsubscribe_done.html",
                400,
                lang="en",
                t=t,
                heading=t["invalid_title"],
                message=t["invalid"],
                ok=False,
            )
        lang, t, list_name = texts_for(tok.list_id)
        # GET and HEAD only look (Starlette routes HEAD to a GET route's handler, and
        # ``curl -I`` or a link checker sends HEAD): the page, never a change.
        if request.method in ("GET", "HEAD"):
            with db.session() as s:
                already = _is_suppressed(s, tok.email, tok.list_id)
            if already:
                return _page(
                    "unsubscribe_done.html",
                    lang=lang,
                    t=t,
                    heading=t["done_title"],
                    message=t["already"].format(email=tok.email, list=list_name),
                    ok=True,
                )
            return _page(
                "unsubscribe.html",
                lang=lang,
                t=t,
                question=t["question"].format(email=tok.email, list=list_name),
            )
        if request.method != "POST":  # the route allows no other; never act on one
            return PlainTextResponse("method not allowed\n", 405, headers={"Allow": "GET, POST"})
        # POST: the button, or a mail client's RFC 8058 one-click request; the body says
        # which, and a POST that says neither changes nothing.
        try:
            fields = await _form_fields(request)
        except BodyTooLarge as exc:
            return too_large(exc)
        except ClientDisconnect:  # the client hung up before saying anything: no change
            return Response(status_code=400)
        one_click = "One-Click" in fields.get("List-Unsubscribe", [])
        if not one_click and "1" not in fields.get("confirm", []):
            return _page(
                "unsubscribe.html",
                400,
                lang=lang,
                t=t,
                question=t["question"].format(email=tok.email, list=list_name),
                notice=t["not_asked"],
            )
        with db.session() as s:
            added = suppress(
                s,
                tok.email,
                list_id=tok.list_id,
                reason="unsubscribed",
                now=_now(request),
                detail="one-click (RFC 8058)" if one_click else "unsubscribe page",
            )
        log.info("unsubscribed", extra={"list": tok.list_id, "new": added})
        message = t["done" if added else "already"].format(email=tok.email, list=list_name)
        return _page(
            "unsubscribe_done.html",
            lang=lang,
            t=t,
            heading=t["done_title"],
            message=message,
            ok=True,
        )

    async def sendgrid_events(request: Request) -> Response:
        sg = config.mail.sendgrid
        key = config.secret(sg.webhook_public_key_env)
        if not key:
            log.warning(
                "sendgrid webhook refused: no public key configured",
                extra={"env": sg.webhook_public_key_env},
            )
            return PlainTextResponse("webhook verification key not configured\n", 403)
        try:
            body = await read_body(
                request, sg.webhook_max_bytes, setting="mail.sendgrid.webhook_max_bytes"
            )
        except BodyTooLarge as exc:
            log.warning("sendgrid webhook refused: body too large", extra={"limit": exc.limit})
            return too_large(exc)
        except ClientDisconnect:
            return Response(status_code=400)
        signature = request.headers.get(SIGNATURE_HEADER)
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        if not signature or not timestamp or not verify_signature(key, body, signature, timestamp):
            log.warning("sendgrid webhook refused: bad or missing signature")
            return PlainTextResponse("invalid signature\n", 403)
        stale = timestamp_problem(timestamp, now=_now(request), max_age=sg.webhook_max_age_seconds)
        if stale:
            log.warning("sendgrid webhook refused: %s", stale)
            return PlainTextResponse(f"{stale}\n", 403)
        events, problem = parse_events(body)
        if problem:
            log.warning("sendgrid webhook refused: %s", problem)
            return PlainTextResponse(f"{problem}\n", 400)
        with db.session() as s:
            counts = apply_events(s, events, now=_now(request))
        return JSONResponse({"ok": True, **counts})

    return [
        # GET also answers HEAD; PUT, DELETE and the rest are 405 and change nothing.
        Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
        Route("/webhooks/sendgrid/events", sendgrid_events, methods=["POST"]),
    ]


async def _form_fields(request: Request) -> dict[str, list[str]]:
    """The POSTed fields, urlencoded (also when no Content-Type is sent) or multipart.

    RFC 8058 §3.2 has clients send ``List-Unsubscribe=One-Click`` as multipart/form-data or
    application/x-www-form-urlencoded; the page's form sends the latter."""
    from urllib.parse import parse_qs

    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    from newsexchange.web.limits import capped_request

    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        capped = await capped_request(
            request, UNSUBSCRIBE_MAX_BYTES, setting="the unsubscribe form limit"
        )
        try:
            form = await capped.form(max_files=0, max_fields=10)
        except (HTTPException, MultiPartException):  # malformed: it asks for nothing
            return {}
        return {k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form}
    body = await read_body(request, UNSUBSCRIBE_MAX_BYTES, setting="the unsubscribe form limit")
    return parse_qs(body.decode("utf-8", "replace"), max_num_fields=10) if body else {}


def timestamp_problem(timestamp: str, *, now: datetime, max_age: int) -> str | None:
    """Why a signed timestamp is refused (too old, too far ahead, not a Unix time), or None.

    SendGrid's advice: compare the signed timestamp with your own clock and refuse requests
    outside a short window, so a captured request cannot be replayed."""
    value = timestamp.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 12):
        return "the signed timestamp is not a Unix time in seconds"
    age = now.timestamp() - int(value)
    if age > max_age:
        return (
            f"the signed timestamp is {int(age)} seconds old "
            f"(more than mail.sendgrid.webhook_max_age_seconds = {max_age})"
        )
    if -age > max_age:
        return (
            f"the signed timestamp is {int(-age)} seconds ahead of our clock "
            f"(more than mail.sendgrid.webhook_max_age_seconds = {max_age})"
        )
    return None


def parse_events(body: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """The events of a webhook body, or a reason why it cannot be applied (pure).

    Checked before anything is written, so a batch is applied whole or not at all: the
    fields we use must have the types and sizes SendGrid sends (an id of 10**30 would
    otherwise reach the database as a number no column holds)."""
    try:
        data = json.loads(body)
    except RecursionError:
        return [], "the JSON body is nested too deeply"
    except ValueError as exc:
        if "digits" in str(exc):  # Python refuses integers of over 4,300 digits
            return [], "the JSON body has a number of more than 4,300 digits"
        return [], f"the body is not JSON: {str(exc)[:120]}"  # or not UTF-8
    if not isinstance(data, list):
        return [], "expected a JSON array of events"
    events: list[dict[str, Any]] = []
    for i, event in enumerate(data):
        if not isinstance(event, dict):
            events.append({})  # counted as ignored, as before
            continue
        problem = _event_problem(event)
        if problem:
            return [], f"event {i}: {problem}"
        events.append(event)
    return events, None


_STRING_FIELDS = {"sg_event_id": 255, "sg_message_id": 255, "event": 40, "email": 320}


def _event_problem(event: dict[str, Any]) -> str | None:
    for name, longest in _STRING_FIELDS.items():
        value = event.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            return f"{name} is not a string"
        if len(value) > longest:
            return f"{name} is longer than {longest} characters"
    raw = event.get(CUSTOM_ARG)
    if raw is not None and _delivery_id(raw) is None:
        return f"{CUSTOM_ARG} is not a delivery id (an integer from 1 to {MAX_DELIVERY_ID})"
    return None


def _delivery_id(raw: object) -> int | None:
    """Our custom arg as a delivery id, or None when it cannot be one."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 10:
        value = int(raw)
    else:
        return None
    return value if 1 <= value <= MAX_DELIVERY_ID else None


def verify_signature(public_key: str, body: bytes, signature: str, timestamp: str) -> bool:
    """SendGrid's ECDSA check (sendgrid.helpers.eventwebhook), False on anything malformed."""
    from sendgrid.helpers.eventwebhook import EventWebhook

    key = public_key.strip()
    if "BEGIN PUBLIC KEY" in key:  # accept a PEM as well as SendGrid's bare base64 form
        key = "".join(line for line in key.splitlines() if "-----" not in line)
    try:
        hook = EventWebhook()
        ecdsa_key = hook.convert_public_key_to_ecdsa(key)
        return bool(hook.verify_signature(body.decode("utf-8"), signature, timestamp, ecdsa_key))
    except Exception:  # bad base64, bad DER, bad key: all mean "not signed by SendGrid"
        return False


def _delivery_for(session: Session, event: dict[str, Any]) -> Delivery | None:
    delivery_id = _delivery_id(event.get(CUSTOM_ARG))
    if delivery_id is not None:
        d = session.get(Delivery, delivery_id)
        if d is not None:
            return d
    # Fallback for events without our custom arg: SendGrid's message id starts with the
    # X-Message-Id the request got (``<id>.filter…``), plus the address.
    sg_id = str(event.get("sg_message_id") or "").split(".", 1)[0]
    email = str(event.get("email") or "").lower()
    if sg_id and email:
        return session.scalar(
            select(Delivery).where(Delivery.provider_message_id == sg_id, Delivery.email == email)
        )
    return None


def apply_events(session: Session, events: list[Any], *, now: datetime) -> dict[str, int]:
    """Apply SendGrid events once each; returns counts (applied, duplicate, ignored)."""
    applied = duplicate = ignored = 0
    for event in events:
        if not isinstance(event, dict):
            ignored += 1
            continue
        kind = str(event.get("event") or "")
        event_id = str(event.get("sg_event_id") or "")
        if not event_id:
            ignored += 1
            continue
        if session.get(ProviderEvent, event_id) is not None:
            duplicate += 1
            continue
        try:
            with session.begin_nested():
                session.add(ProviderEvent(id=event_id[:255], kind=kind[:40], received_at=now))
                session.flush()
        except IntegrityError:  # the same event arriving twice at once
            duplicate += 1
            continue
        if _apply_event(session, event, kind, now=now):
            applied += 1
        else:
            ignored += 1
    return {"applied": applied, "duplicate": duplicate, "ignored": ignored}


def _apply_event(session: Session, event: dict[str, Any], kind: str, *, now: datetime) -> bool:
    delivery = _delivery_for(session, event)
    email = (delivery.email if delivery else str(event.get("email") or "")).lower()
    if not email or email.startswith("sha256:"):
        return False
    reason = str(event.get("reason") or event.get("response") or event.get("type") or kind)
    if kind == "bounce" and event.get("type") == "blocked":
        # A block is the receiving server refusing us (reputation, content), not a dead
        # address: recorded, not suppressed (SendGrid's own "blocks" list is separate too).
        if delivery is not None:
            delivery.last_error = f"blocked: {reason}"[:2000]
        return True
    if kind in ("bounce", "dropped"):
        if delivery is not None:
            delivery.status = "failed"
            delivery.last_error = f"{kind}: {reason}"[:2000]
        suppress(
            session, email, list_id=None, reason="bounced", now=now, detail=f"{kind}: {reason}"
        )
        return True
    if kind == "spamreport":
        suppress(session, email, list_id=None, reason="complained", now=now, detail="spam report")
        return True
    if kind in ("unsubscribe", "group_unsubscribe"):
        list_id = delivery.list_id if delivery is not None else None
        suppress(session, email, list_id=list_id, reason="unsubscribed", now=now, detail=kind)
        return True
    if kind == "delivered" and delivery is not None:
        if delivery.status in ("claimed", "retrying", "pending"):
            delivery.status = "sent"  # SendGrid delivered it; our mark may have been lost
            delivery.sent_at = delivery.sent_at or now
        return True
    return False
