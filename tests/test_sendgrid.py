"""SendGrid: the v3 mail/send requests our backend makes (against a local HTTP server standing
in for api.sendgrid.com), its retries, and the signed Event Webhook over the real app."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Database, Delivery, Digest, ProviderEvent, Suppression
from newsexchange.delivery.send import run_send
from newsexchange.delivery.unsubscribe import read_token
from newsexchange.mail.sendgrid import CUSTOM_ARG, SendgridMailer
from newsexchange.web.app import create_app
from tests.servers import HTTPServer, Request, Response
from tests.test_delivery_support import FROM, NOW, delivery_config, seed_digest
from tests.webserver import WebServer

SEND_PATH = "/v3/mail/send"
SIGNED_AT = 1795400000  # the Unix time the tests sign webhook requests at
SIGNED_AT_CLOCK = datetime.fromtimestamp(SIGNED_AT + 60, UTC)
RESERVED_HEADERS = {
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
}


def assert_valid_v3_mail_send(body: dict[str, Any]) -> None:
    """The constraints of SendGrid's v3 /mail/send schema that a request of ours can break
    (docs: "Mail Send" reference and its error list)."""
    allowed = {
        "personalizations",
        "from",
        "reply_to",
        "reply_to_list",
        "subject",
        "content",
        "attachments",
        "template_id",
        "headers",
        "categories",
        "custom_args",
        "send_at",
        "batch_id",
        "asm",
        "ip_pool_name",
        "mail_settings",
        "tracking_settings",
        "sections",
    }
    assert set(body) <= allowed, set(body) - allowed
    assert isinstance(body["from"]["email"], str) and "@" in body["from"]["email"]
    assert body.get("subject") or all(p.get("subject") for p in body["personalizations"])
    ps = body["personalizations"]
    assert 1 <= len(ps) <= 1000
    seen: set[str] = set()
    recipients = 0
    for p in ps:
        assert set(p) <= {
            "to",
            "cc",
            "bcc",
            "from",
            "subject",
            "headers",
            "substitutions",
            "dynamic_template_data",
            "custom_args",
            "send_at",
        }
        assert len(p["to"]) >= 1
        for to in p["to"]:
            assert "@" in to["email"]
            assert to["email"].lower() not in seen, "an address twice in one request"
            seen.add(to["email"].lower())
            recipients += 1
        for k, v in p.get("headers", {}).items():
            assert k.lower() not in RESERVED_HEADERS and isinstance(v, str)
        for k, v in p.get("substitutions", {}).items():
            assert isinstance(k, str) and isinstance(v, str)
        assert len(json.dumps(p.get("substitutions", {}))) <= 10000
        for v in p.get("custom_args", {}).values():
            assert isinstance(v, str)  # the API refuses non-string custom_args values
        assert len(json.dumps({**body.get("custom_args", {}), **p.get("custom_args", {})})) <= 10000
    assert recipients <= 1000
    types = [c["type"] for c in body["content"]]
    assert types[0] == "text/plain" and set(types) == {"text/plain", "text/html"}
    assert all(c["value"] for c in body["content"])
    for k, v in body.get("headers", {}).items():
        assert k.lower() not in RESERVED_HEADERS and isinstance(v, str)
    cats = body.get("categories", [])
    assert len(cats) <= 10 and len(set(cats)) == len(cats)
    assert all(isinstance(c, str) and len(c) <= 255 for c in cats)


class FakeSendGrid:
    """Answers like /v3/mail/send: 202 with X-Message-Id, or scripted failures first."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.script: list[Response] = []
        self.accepted: list[dict[str, Any]] = []
        server.route(SEND_PATH, self.handle)

    def handle(self, req: Request) -> Response:
        if self.script:
            return self.script.pop(0)
        body = req.json()
        self.accepted.append(body)
        return Response(202, b"", {"X-Message-Id": f"sgmsg{len(self.accepted)}"})

    @property
    def requests(self) -> list[Request]:
        return self.server.requests_to(SEND_PATH)


@pytest.fixture
def sendgrid(http_server: HTTPServer) -> FakeSendGrid:
    return FakeSendGrid(http_server)


def sg_config(write_config: Callable[..., Config], server: HTTPServer, **kw: Any) -> Config:
    return delivery_config(write_config, backend="sendgrid", sendgrid_url=server.url, **kw)


def test_requests_batch_1000_personalizations_with_substitutions_and_custom_args(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    sendgrid: FakeSendGrid,
) -> None:
    cfg = sg_config(write_config, sendgrid.server)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 1205)

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert report.sent == 1205 and report.ok
    assert [len(b["personalizations"]) for b in sendgrid.accepted] == [1000, 205]
    for req in sendgrid.requests:
        assert req.header("Authorization") == "Bearer SG.test-key"
        assert req.header("Content-Type") == "application/json"
    with db.session() as s:
        rows = {d.email: d for d in s.scalars(select(Delivery).where(Delivery.digest_id == did))}
        assert s.get(Digest, did).state == "sent"  # type: ignore[union-attr]
    for i, body in enumerate(sendgrid.accepted, start=1):
        assert_valid_v3_mail_send(body)
        assert body["from"] == {"email": "news@example.org", "name": FROM.split(" <")[0]}
        assert body["reply_to"] == {"email": "editors@example.org", "name": "Editors"}
        assert body["subject"].startswith("Новости Йоэнсуу и Северной Карелии")
        assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert body["headers"]["Precedence"] == "bulk"
        assert body["headers"]["List-Id"].endswith("<petrozavodsk-media.example.org>")
        assert "newsexchange" in body["categories"] and f"digest-{did}" in body["categories"]
        for c in body["content"]:  # SendGrid fills the marker per personalization
            assert "%%UNSUBSCRIBE_URL%%" in c["value"]
        for p in body["personalizations"]:
            addr = p["to"][0]["email"]
            row = rows[addr]
            assert p["custom_args"] == {CUSTOM_ARG: str(row.id)}
            assert p["headers"]["Message-ID"] == row.message_id
            url = p["substitutions"]["%%UNSUBSCRIBE_URL%%"]
            assert p["headers"]["List-Unsubscribe"].startswith(f"<{url}>, <mailto:")
            tok = read_token(cfg, url.rsplit("/", 1)[1])
            assert tok is not None and tok.email == addr
            assert row.provider_message_id == f"sgmsg{i}"


def test_429_then_success_retries_after_the_time_asked(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    sendgrid: FakeSendGrid,
) -> None:
    cfg = sg_config(write_config, sendgrid.server)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 3)
    sendgrid.script = [
        Response(429, b'{"errors":[{"message":"too many requests"}]}', {"Retry-After": "2"}),
        Response(503, b"busy"),
    ]
    slept: list[float] = []
    mailer = SendgridMailer(cfg, sleep=slept.append)

    report = run_send(db, cfg, now=NOW, digest_id=did, mailer=mailer)

    assert report.sent == 3 and report.ok
    assert len(sendgrid.requests) == 3  # 429, 503, 202
    assert slept[0] == 2.0  # Retry-After honoured
    assert slept[1] > 0  # 5xx: exponential backoff
    assert sendgrid.requests[0].body == sendgrid.requests[2].body  # the same request again


def test_persistent_5xx_leaves_deliveries_to_retry_and_suppresses_nobody(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    sendgrid: FakeSendGrid,
) -> None:
    cfg = sg_config(write_config, sendgrid.server)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 2)
    sendgrid.script = [Response(500, b"oops")] * 4
    mailer = SendgridMailer(cfg, sleep=lambda _s: None)

    report = run_send(db, cfg, now=NOW, digest_id=did, mailer=mailer)

    assert (report.sent, report.failed_retrying, report.failed_permanent) == (0, 2, 0)
    with db.session() as s:
        assert {d.status for d in s.scalars(select(Delivery))} == {"retrying"}
        assert s.scalars(select(Suppression)).all() == []
        assert s.get(Digest, did).state == "sending"  # type: ignore[union-attr]


def test_400_is_permanent_for_the_request_but_suppresses_nobody(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    sendgrid: FakeSendGrid,
) -> None:
    cfg = sg_config(write_config, sendgrid.server)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 2)
    sendgrid.script = [Response(400, b'{"errors":[{"message":"bad request"}]}')]

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert report.failed_permanent == 2 and len(sendgrid.requests) == 1
    with db.session() as s:
        assert {d.status for d in s.scalars(select(Delivery))} == {"failed"}
        assert s.scalars(select(Suppression)).all() == []


def test_a_refused_api_key_stops_the_send_and_marks_nothing_failed(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    sendgrid: FakeSendGrid,
) -> None:
    cfg = sg_config(write_config, sendgrid.server)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 2)
    sendgrid.script = [Response(401, b'{"errors":[{"message":"authorization required"}]}')]

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert report.error is not None and "API key" in report.error and not report.ok
    with db.session() as s:
        rows = s.scalars(select(Delivery)).all()
        assert {d.status for d in rows} == {"retrying"}
        assert {d.attempts for d in rows} == {0}  # not counted against the recipients


# -- the Event Webhook ------------------------------------------------------------------------


@pytest.fixture
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _public_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()  # the form SendGrid shows in its settings


def _sign(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str) -> str:
    sig = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(sig).decode()


@pytest.fixture
def webhook_app(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    signing_key: ec.EllipticCurvePrivateKey,
) -> Iterator[tuple[Config, Database, WebServer]]:
    cfg = delivery_config(
        write_config, backend="sendgrid", env={"SG_WEBHOOK_KEY": _public_b64(signing_key)}
    )
    db = db_for(cfg)
    # The app's clock is a minute after the tests' signed timestamps: a webhook timestamp is
    # checked against "now" (5 minutes either way), and the suite must pass on any date.
    server = WebServer(create_app(cfg, db, clock=lambda: SIGNED_AT_CLOCK)).start()
    yield cfg, db, server
    server.stop()


def _sent_digest(db: Database, cfg: Config) -> dict[str, Delivery]:
    did = seed_digest(
        db, cfg, [("", "a@example.org"), ("", "b@example.org"), ("", "c@example.org")]
    )
    with db.session() as s:
        rows = {d.email: d for d in s.scalars(select(Delivery).where(Delivery.digest_id == did))}
        for d in rows.values():
            d.status = "sent"
            d.provider_message_id = "sgmsg1"
    return rows


def _post(server: WebServer, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        server.url + "/webhooks/sendgrid/events",
        content=body,
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )


def test_signed_events_update_deliveries_and_suppressions_once(
    webhook_app: tuple[Config, Database, WebServer],
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    cfg, db, server = webhook_app
    rows = _sent_digest(db, cfg)
    events = [
        {
            "email": "a@example.org",
            "event": "bounce",
            "type": "bounce",
            "reason": "550 5.1.1 user unknown",
            "sg_event_id": "ev-1",
            "sg_message_id": "sgmsg1.filter-1",
            CUSTOM_ARG: str(rows["a@example.org"].id),
        },
        {
            "email": "b@example.org",
            "event": "spamreport",
            "sg_event_id": "ev-2",
            CUSTOM_ARG: str(rows["b@example.org"].id),
        },
        {
            "email": "c@example.org",
            "event": "unsubscribe",
            "sg_event_id": "ev-3",
            "sg_message_id": "sgmsg1.filter-3",  # no custom arg: matched by message id
        },
        {"email": "c@example.org", "event": "open", "sg_event_id": "ev-4"},
    ]
    body = json.dumps(events).encode()
    ts = "1795400000"

    resp = _post(
        server,
        body,
        {
            "X-Twilio-Email-Event-Webhook-Signature": _sign(signing_key, body, ts),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts,
        },
    )

    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True, "applied": 3, "duplicate": 0, "ignored": 1}
    with db.session() as s:
        sups = {(x.email, x.reason, x.list_id) for x in s.scalars(select(Suppression))}
        assert sups == {
            ("a@example.org", "bounced", None),
            ("b@example.org", "complained", None),
            ("c@example.org", "unsubscribed", "petrozavodsk-media"),
        }
        bounced = s.get(Delivery, rows["a@example.org"].id)
        assert bounced is not None and bounced.status == "failed"
        assert "550 5.1.1" in (bounced.last_error or "")

    # SendGrid retries a POST it thinks failed: the same events change nothing.
    again = _post(
        server,
        body,
        {
            "X-Twilio-Email-Event-Webhook-Signature": _sign(signing_key, body, "1795400060"),
            "X-Twilio-Email-Event-Webhook-Timestamp": "1795400060",
        },
    )
    assert again.json()["duplicate"] == 4
    with db.session() as s:
        assert len(s.scalars(select(Suppression)).all()) == 3


@pytest.mark.parametrize("case", ["unsigned", "wrong key", "tampered body", "garbage signature"])
def test_unsigned_or_mis_signed_events_are_refused_and_change_nothing(
    webhook_app: tuple[Config, Database, WebServer],
    signing_key: ec.EllipticCurvePrivateKey,
    case: str,
) -> None:
    cfg, db, server = webhook_app
    rows = _sent_digest(db, cfg)
    body = json.dumps(
        [
            {
                "email": "a@example.org",
                "event": "bounce",
                "sg_event_id": "ev-x",
                CUSTOM_ARG: str(rows["a@example.org"].id),
            }
        ]
    ).encode()
    ts = "1795400000"
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": _sign(signing_key, body, ts),
        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
    }
    if case == "unsigned":
        headers = {}
    elif case == "wrong key":
        other = ec.generate_private_key(ec.SECP256R1())
        headers["X-Twilio-Email-Event-Webhook-Signature"] = _sign(other, body, ts)
    elif case == "tampered body":
        body = body.replace(b"bounce", b"dropped")
    else:
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "not base64 at all!"

    resp = _post(server, body, headers)

    assert resp.status_code == 403
    with db.session() as s:
        assert s.scalars(select(Suppression)).all() == []
        assert s.scalars(select(ProviderEvent)).all() == []
        assert s.get(Delivery, rows["a@example.org"].id).status == "sent"  # type: ignore[union-attr]


def test_a_complete_message_such_as_an_approval_request_goes_as_its_own_request(
    write_config: Callable[..., Config], sendgrid: FakeSendGrid
) -> None:
    from email.message import EmailMessage

    from newsexchange.mail import OutgoingMessage, get_mailer

    cfg = sg_config(write_config, sendgrid.server)
    msg = EmailMessage()
    msg["From"] = FROM
    msg["To"] = "Редактор <editor@example.fi>"
    msg["Subject"] = "Утвердите дайджест"
    msg["Message-ID"] = "<approval.1@example.org>"
    msg.set_content("Пожалуйста, проверьте дайджест.")

    mailer = get_mailer(cfg)
    results = mailer.send([OutgoingMessage(message=msg, recipient="editor@example.fi")])

    assert results[0].ok and results[0].provider_message_id == "sgmsg1"
    body = sendgrid.accepted[0]
    assert_valid_v3_mail_send(
        {**body, "content": [*body["content"], {"type": "text/html", "value": "x"}]}
    )
    assert body["personalizations"] == [
        {
            "to": [{"email": "editor@example.fi", "name": "Редактор"}],
            "headers": {"Message-ID": "<approval.1@example.org>"},
        }
    ]
    assert body["subject"] == "Утвердите дайджест"
    assert body["content"] == [{"type": "text/plain", "value": "Пожалуйста, проверьте дайджест.\n"}]
