"""The SendGrid Event Webhook over the real app refuses what it cannot trust or hold: a signed
timestamp outside the window (replays), a body over the cap (declared or streamed), and signed
bodies it cannot read (huge ids, deep nesting) — 403/413/400 with the reason, nothing applied.
Also the capped reader a form route (inbound mail) uses."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsexchange.config import Config
from newsexchange.db import Database, Delivery, ProviderEvent, Suppression
from newsexchange.delivery.events import parse_events, timestamp_problem
from newsexchange.mail.sendgrid import CUSTOM_ARG
from newsexchange.web.app import create_app
from newsexchange.web.limits import BodyTooLarge, capped_request, too_large
from tests.test_delivery_support import delivery_config, seed_digest
from tests.webserver import WebServer

NOW_TS = 1795400000
NOW = datetime.fromtimestamp(NOW_TS, UTC)
PATH = "/webhooks/sendgrid/events"
MAX_BYTES = 64 * 1024  # set small so the tests need no megabytes


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def app(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    key: ec.EllipticCurvePrivateKey,
) -> Iterator[tuple[Config, Database, WebServer, Clock]]:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    env = {"SG_WEBHOOK_KEY": base64.b64encode(der).decode()}
    first = delivery_config(write_config, backend="sendgrid", env=env)
    text = (
        Path(first.path)
        .read_text(encoding="utf-8")
        .replace(
            "webhook_public_key_env: SG_WEBHOOK_KEY}",
            f"webhook_public_key_env: SG_WEBHOOK_KEY, webhook_max_bytes: {MAX_BYTES}}}",
        )
    )
    cfg = write_config(
        base=text, env={"SG_KEY": "SG.test-key", "NEWSEXCHANGE_SECRET_KEY": "s3cret", **env}
    )
    assert cfg.mail.sendgrid.webhook_max_bytes == MAX_BYTES
    db = db_for(cfg)
    clock = Clock(NOW)
    server = WebServer(create_app(cfg, db, clock=clock)).start()
    yield cfg, db, server, clock
    server.stop()


def _sign(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str) -> dict[str, str]:
    sig = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def _bounce(db: Database, cfg: Config) -> tuple[bytes, int]:
    """A sent delivery and a signed-able body bouncing it."""
    did = seed_digest(db, cfg, [("", "a@example.org")])
    with db.session() as s:
        d = s.scalars(select(Delivery).where(Delivery.digest_id == did)).one()
        d.status = "sent"
        delivery_id = d.id
    events = [
        {
            "email": "a@example.org",
            "event": "bounce",
            "sg_event_id": "ev-1",
            CUSTOM_ARG: str(delivery_id),
        }
    ]
    return json.dumps(events).encode(), delivery_id


def _nothing_applied(db: Database) -> bool:
    with db.session() as s:
        return (
            not s.scalars(select(ProviderEvent)).all() and not s.scalars(select(Suppression)).all()
        )


# -- the signed timestamp ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "status", "reason"),
    [
        (-301, 403, "301 seconds old"),  # signed more than 5 minutes ago: a replay
        (+301, 403, "301 seconds ahead"),
        (-299, 200, None),
        (+299, 200, None),
    ],
)
def test_a_signed_timestamp_outside_five_minutes_is_refused(
    app: tuple[Config, Database, WebServer, Clock],
    key: ec.EllipticCurvePrivateKey,
    offset: int,
    status: int,
    reason: str | None,
) -> None:
    cfg, db, server, _clock = app
    body, _did = _bounce(db, cfg)

    resp = httpx.post(
        server.url + PATH, content=body, headers=_sign(key, body, str(NOW_TS + offset))
    )

    assert resp.status_code == status, resp.text
    if reason:
        assert reason in resp.text and "webhook_max_age_seconds = 300" in resp.text
        assert _nothing_applied(db)
    else:
        assert resp.json()["applied"] == 1


def test_a_captured_request_replayed_later_is_refused(
    app: tuple[Config, Database, WebServer, Clock], key: ec.EllipticCurvePrivateKey
) -> None:
    cfg, db, server, clock = app
    body, _did = _bounce(db, cfg)
    headers = _sign(key, body, str(NOW_TS))
    clock.now = datetime.fromtimestamp(NOW_TS + 3600, UTC)  # an hour later, same bytes

    resp = httpx.post(server.url + PATH, content=body, headers=headers)

    assert resp.status_code == 403 and "3600 seconds old" in resp.text
    assert _nothing_applied(db)


def test_max_age_is_the_setting_and_timestamps_that_are_not_unix_times_are_refused() -> None:
    assert timestamp_problem(str(NOW_TS - 61), now=NOW, max_age=60) is not None
    assert timestamp_problem(str(NOW_TS - 59), now=NOW, max_age=60) is None
    for bad in ("9" * 10_000, "-5", "1e9", "", "١٧٩٥٤٠٠٠٠٠"):
        assert timestamp_problem(bad, now=NOW, max_age=300) == (
            "the signed timestamp is not a Unix time in seconds"
        )


# -- body caps --------------------------------------------------------------------------------


def test_a_body_over_the_cap_is_413_whether_declared_or_streamed(
    app: tuple[Config, Database, WebServer, Clock], key: ec.EllipticCurvePrivateKey
) -> None:
    _cfg, db, server, _clock = app
    events = [
        {"event": "open", "sg_event_id": f"ev-{i}", "email": "a@example.org"} for i in range(2000)
    ]
    body = json.dumps(events).encode()
    assert len(body) > MAX_BYTES
    headers = _sign(key, body, str(NOW_TS))

    declared = httpx.post(server.url + PATH, content=body, headers=headers)

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    streamed = httpx.post(server.url + PATH, content=chunks(), headers=headers)

    for resp in (declared, streamed):
        assert resp.status_code == 413
        assert f"the limit is {MAX_BYTES} bytes (mail.sendgrid.webhook_max_bytes)" in resp.text
    assert _nothing_applied(db)


def test_a_declared_length_over_the_cap_is_refused_before_any_body_arrives(
    app: tuple[Config, Database, WebServer, Clock],
) -> None:
    _cfg, _db, server, _clock = app
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # Headers only: a server that waited for the body would never answer.
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000000000000\r\n\r\n".encode()
        )
        reply = b""
        while chunk := sock.recv(65536):  # the server closes after its 413
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"1000000000000 bytes" in reply


# -- signed bodies that cannot be applied -----------------------------------------------------


def _event(**fields: Any) -> list[dict[str, Any]]:
    return [{"email": "a@example.org", "event": "bounce", "sg_event_id": "ev-9", **fields}]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps(_event(**{CUSTOM_ARG: 10**30})), f"event 0: {CUSTOM_ARG} is not a delivery id"),
        (json.dumps(_event(**{CUSTOM_ARG: "9" * 10_000})), f"{CUSTOM_ARG} is not a delivery id"),
        (json.dumps(_event(**{CUSTOM_ARG: "²"})), f"{CUSTOM_ARG} is not a delivery id"),
        (json.dumps(_event(**{CUSTOM_ARG: -1})), f"{CUSTOM_ARG} is not a delivery id"),
        (
            json.dumps(_event(**{CUSTOM_ARG: 0})).replace(": 0}", ": " + "9" * 10_000 + "}"),
            "a number of more than 4,300 digits",
        ),
        (json.dumps(_event(sg_message_id=["junk", {"x": 1}])), "sg_message_id is not a string"),
        (json.dumps(_event(sg_message_id="x" * 10_000)), "sg_message_id is longer than 255"),
        (json.dumps(_event(sg_event_id=10**30)), "sg_event_id is not a string"),
        (json.dumps(_event(email={"nested": True})), "email is not a string"),
        ("[" * 30_000 + "]" * 30_000, "the JSON body is nested too deeply"),
        ('{"events": []}', "expected a JSON array of events"),
        ("{not json", "the body is not JSON"),
    ],
    ids=lambda v: v[:30] if isinstance(v, str) else None,
)
def test_a_signed_body_that_cannot_be_applied_is_400_with_the_reason(
    app: tuple[Config, Database, WebServer, Clock],
    key: ec.EllipticCurvePrivateKey,
    body: str,
    reason: str,
) -> None:
    cfg, db, server, _clock = app
    _bounce(db, cfg)
    raw = body.encode()

    resp = httpx.post(server.url + PATH, content=raw, headers=_sign(key, raw, str(NOW_TS)))

    assert resp.status_code == 400, resp.text
    assert reason in resp.text
    assert _nothing_applied(db)


def test_a_batch_with_one_bad_event_applies_none_of_it() -> None:
    good = {"email": "a@example.org", "event": "bounce", "sg_event_id": "ev-1", CUSTOM_ARG: "7"}
    bad = {**good, "sg_event_id": "ev-2", CUSTOM_ARG: 2**31}
    events, problem = parse_events(json.dumps([good, "not an object", bad]).encode())
    assert events == [] and problem == (
        f"event 2: {CUSTOM_ARG} is not a delivery id (an integer from 1 to {2**31 - 1})"
    )
    events, problem = parse_events(json.dumps([good, "not an object"]).encode())
    assert problem is None and events == [good, {}]  # a non-object is ignored, as before


# -- the capped reader for form routes (inbound mail) -----------------------------------------


@pytest.fixture
def form_server() -> Iterator[WebServer]:
    async def inbound(request: Request) -> Response:
        try:
            request = await capped_request(request, 4096, setting="mail.sendgrid.inbound_max_bytes")
        except BodyTooLarge as exc:
            return too_large(exc)
        form = await request.form()
        return JSONResponse({k: str(v) for k, v in form.items()})

    server = WebServer(Starlette(routes=[Route("/inbound", inbound, methods=["POST"])])).start()
    yield server
    server.stop()


def test_a_capped_form_route_parses_small_posts_and_refuses_large_ones(
    form_server: WebServer,
) -> None:
    small = httpx.post(
        form_server.url + "/inbound",
        files={"attachment": ("a.txt", b"hello")},
        data={"from": "editor@example.fi", "text": "APPROVE"},
    )
    assert small.status_code == 200
    assert small.json()["from"] == "editor@example.fi" and small.json()["text"] == "APPROVE"

    large = httpx.post(
        form_server.url + "/inbound",
        files={"attachment": ("a.bin", b"x" * 10_000)},
        data={"from": "editor@example.fi"},
    )
    assert large.status_code == 413
    assert "(mail.sendgrid.inbound_max_bytes)" in large.text


def test_100000_nested_lists_are_a_reason_not_a_recursion_error() -> None:
    events, problem = parse_events(b"[" * 100_000 + b"]" * 100_000)
    assert events == [] and problem == "the JSON body is nested too deeply"
