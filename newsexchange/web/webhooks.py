"""SendGrid's Event Webhook (the events themselves are applied by ``delivery/events.py``).

SendGrid signs each POST with ECDSA P-256 over ``timestamp + body``
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

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.delivery.events import (
    apply_events,
    parse_events,
    timestamp_problem,
    verify_signature,
)
from newsexchange.web.deps import config_of, db_of, now
from newsexchange.web.limits import BodyTooLarge, read_body, too_large

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "routes", "sendgrid_events"]

# Named as before the move (delivery/web.py): the "logger" field of these lines is unchanged.
log = logging.getLogger("newsexchange.delivery.web")

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


def routes(config: Config, db: Database) -> list[BaseRoute]:
    """The SendGrid Event Webhook route (the handler reads the config and database from the
    app)."""
    return [Route("/webhooks/sendgrid/events", sendgrid_events, methods=["POST"])]


async def sendgrid_events(request: Request) -> Response:
    config = config_of(request)
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
    stale = timestamp_problem(timestamp, now=now(request), max_age=sg.webhook_max_age_seconds)
    if stale:
        log.warning("sendgrid webhook refused: %s", stale)
        return PlainTextResponse(f"{stale}\n", 403)
    events, problem = parse_events(body)
    if problem:
        log.warning("sendgrid webhook refused: %s", problem)
        return PlainTextResponse(f"{problem}\n", 400)
    with db_of(request).session() as s:
        counts = apply_events(s, events, now=now(request))
    return JSONResponse({"ok": True, **counts})
