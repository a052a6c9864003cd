"""Web routes of delivery: the unsubscribe page (RFC 8058 one-click) and SendGrid's Event
Webhook.

Unsubscribe: ``GET /unsubscribe/{token}`` only shows a page with a button, because mail
scanners and link previewers fetch every URL in a message and must not unsubscribe anyone.
``POST /unsubscribe/{token}`` unsubscribes: that is both the button and the RFC 8058
one-click request a mail client sends by itself (body ``List-Unsubscribe=One-Click``), so it
needs no login, no cookie and no CSRF token — the signed token is the authority, and it can
only ever unsubscribe the address it names.

Event Webhook: SendGrid signs each POST with ECDSA P-256 over ``timestamp + body``
(headers ``X-Twilio-Email-Event-Webhook-Signature`` / ``-Timestamp``); the public key is read
from the environment variable named by ``mail.sendgrid.webhook_public_key_env``. Unsigned
or mis-signed requests get 403 and change nothing. Each event is applied once (its
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
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from newsexchange.config import Config
from newsexchange.db import Database, Delivery, ProviderEvent, Suppression, utcnow
from newsexchange.delivery.sendgrid import CUSTOM_ARG
from newsexchange.delivery.tokens import email_hash, read_token, suppress

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# The page speaks the list's language. A dozen strings: a table, like the digest's labels.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Unsubscribe",
        "question": "Stop sending {list} to {email}?",
        "button": "Unsubscribe",
        "note": "Nothing changes until you press the button.",
        "done_title": "You are unsubscribed",
        "done": "{email} will get no more mail from {list}.",
        "already": "{email} was already unsubscribed from {list}.",
        "invalid_title": "This link does not work",
        "invalid": "The unsubscribe link is damaged or was not made by us. Reply to any of "
        "our mails and we will remove you by hand.",
        "all_lists": "all our lists",
    },
    "fi": {
        "title": "Peru tilaus",
        "question": "Lopetetaanko listan {list} lähettäminen osoitteeseen {email}?",
        "button": "Peru tilaus",
        "note": "Mitään ei tapahdu ennen kuin painat painiketta.",
        "done_title": "Tilaus on peruttu",
        "done": "{email} ei enää saa postia listalta {list}.",
        "already": "{email} oli jo poistettu listalta {list}.",
        "invalid_title": "Linkki ei toimi",
        "invalid": "Tilauksen peruutuslinkki on vioittunut. Vastaa mihin tahansa "
        "viestiimme, niin poistamme sinut käsin.",
        "all_lists": "kaikilta listoiltamme",
    },
    "ru": {
        "title": "Отписаться",
        "question": "Больше не присылать «{list}» на адрес {email}?",
        "button": "Отписаться",
        "note": "Ничего не изменится, пока вы не нажмёте кнопку.",
        "done_title": "Вы отписались",
        "done": "На адрес {email} больше не будут приходить письма «{list}».",
        "already": "Адрес {email} уже был отписан от «{list}».",
        "invalid_title": "Ссылка не работает",
        "invalid": "Ссылка для отписки повреждена. Ответьте на любое наше письмо, и мы "
        "удалим вас вручную.",
        "all_lists": "всех наших рассылок",
    },
}


def _now(request: Request) -> datetime:
    clock = getattr(request.app.state, "clock", None)
    return clock() if callable(clock) else utcnow()


def _page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    from newsexchange.web.templating import environment

    body = environment().get_template(f"web/{name}").render(**ctx)
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
        t = TEXTS.get(lang, TEXTS["en"])
        list_name = (settings.name or list_id) if settings and list_id else t["all_lists"]
        return lang, t, list_name

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        tok = read_token(config, token)
        if tok is None:
            t = TEXTS["en"]
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
        if request.method == "GET":
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
        # POST: the button, or a mail client's RFC 8058 one-click request. The body is not
        # needed (the token says who and what); it only tells the two apart in the record.
        one_click = "List-Unsubscribe=One-Click" in await _form_text(request)
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
        body = await request.body()
        key = config.secret(config.mail.sendgrid.webhook_public_key_env)
        if not key:
            log.warning(
                "sendgrid webhook refused: no public key configured",
                extra={"env": config.mail.sendgrid.webhook_public_key_env},
            )
            return PlainTextResponse("webhook verification key not configured\n", 403)
        signature = request.headers.get(SIGNATURE_HEADER)
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        if not signature or not timestamp or not verify_signature(key, body, signature, timestamp):
            log.warning("sendgrid webhook refused: bad or missing signature")
            return PlainTextResponse("invalid signature\n", 403)
        try:
            events = json.loads(body)
        except ValueError:
            return PlainTextResponse("body is not JSON\n", 400)
        if not isinstance(events, list):
            return PlainTextResponse("expected a JSON array of events\n", 400)
        with db.session() as s:
            counts = apply_events(s, events, now=_now(request))
        return JSONResponse({"ok": True, **counts})

    return [
        Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
        Route("/webhooks/sendgrid/events", sendgrid_events, methods=["POST"]),
    ]


async def _form_text(request: Request) -> str:
    try:
        return (await request.body()).decode("utf-8", "replace")[:200]
    except Exception:  # a client that hung up: the unsubscribe is already recorded
        return ""


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
    raw_id = event.get(CUSTOM_ARG)
    if raw_id is not None and str(raw_id).isdigit():
        d = session.get(Delivery, int(raw_id))
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
