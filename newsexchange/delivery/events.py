"""Provider events (SendGrid's Event Webhook) read, checked and applied: bounces and drops
fail the delivery and suppress the address, spam reports and unsubscribes suppress it, a
"delivered" repairs a lost "sent" mark, a block is recorded without suppressing.

No HTTP here (``web/webhooks.py`` is the route): the body is checked whole before anything
is written (:func:`parse_events`, pure), the signed timestamp against a window
(:func:`timestamp_problem`, pure), and each event is applied once (its ``sg_event_id`` is
kept in ``provider_events``), so SendGrid's retries are harmless.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from newsexchange.db import Delivery, Session
from newsexchange.db.queries import deliveries as queries
from newsexchange.delivery.unsubscribe import suppress
from newsexchange.mail.sendgrid import CUSTOM_ARG

__all__ = [
    "MAX_DELIVERY_ID",
    "apply_events",
    "parse_events",
    "timestamp_problem",
    "verify_signature",
]

# Delivery ids are INTEGER primary keys (32-bit signed on PostgreSQL).
MAX_DELIVERY_ID = 2**31 - 1


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
    from sendgrid.helpers.eventwebhook import EventWebhook  # the optional client, when used

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
        return queries.by_provider_id(session, sg_id, email)
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
        if not queries.record_event(session, event_id, kind, now=now):
            duplicate += 1  # a retry by SendGrid, or the same event twice at once
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
