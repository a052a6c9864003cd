"""Delivery over real SMTP (aiosmtpd on loopback): headers, suppressions, bounces, retries,
reconnects, pacing — and the outbox that makes it exactly once."""

from __future__ import annotations

import email.policy
import re
from collections.abc import Callable
from datetime import date, timedelta
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Database, Delivery, Digest, Suppression
from newsexchange.delivery.outbox import claim, enqueue_deliveries
from newsexchange.delivery.send import run_send
from newsexchange.delivery.unsubscribe import read_token, suppress
from newsexchange.errors import DeliveryError
from newsexchange.mail.smtp import SmtpMailer
from tests.servers import SMTPServer
from tests.test_delivery_support import FROM, NOW, delivery_config, seed_digest

PEOPLE = [
    ("Анна Смирнова", "anna@example.org"),
    ("Dmitri Orlov", "orlov@example.org"),
    ("", "desk@example.org"),
]


def _deliveries(db: Database, digest_id: int) -> dict[str, Delivery]:
    with db.session() as s:
        rows = s.scalars(select(Delivery).where(Delivery.digest_id == digest_id)).all()
        return {d.email: d for d in rows}


def _unsubscribe_urls(msg: EmailMessage) -> tuple[str, str]:
    header = str(msg["List-Unsubscribe"])
    urls = re.findall(r"<([^>]+)>", header)
    https = next(u for u in urls if u.startswith("https://"))
    mailto = next(u for u in urls if u.startswith("mailto:"))
    return https, mailto


def test_every_recipient_gets_one_message_with_list_headers(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
    any_db_url: str,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port, database_url=any_db_url)
    db = db_for(cfg)
    did = seed_digest(db, cfg, PEOPLE)

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert report.to_json()["sent"] == 3 and report.ok
    rows = _deliveries(db, did)
    for name, addr in PEOPLE:
        got = smtp_server.received_by(addr)
        assert len(got) == 1, addr
        msg = got[0]
        assert parseaddr(str(msg["To"]))[1] == addr
        if name:
            assert str(msg["To"]).startswith(name)  # the Cyrillic name decodes back
        # Decoded the RFC 2047 way (§6.2: whitespace between adjacent encoded-words is
        # dropped); CPython's address parser keeps a stray space there, MUAs do not.
        raw_from = email.message_from_bytes(msg.as_bytes())["From"]  # compat32: raw header
        assert str(make_header(decode_header(raw_from))) == FROM
        assert str(msg["Reply-To"]) == "Editors <editors@example.org>"
        assert str(msg["Subject"]).startswith("Новости Йоэнсуу и Северной Карелии")
        assert parsedate_to_datetime(str(msg["Date"])) == NOW
        assert msg["Message-ID"] == rows[addr].message_id
        assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
        assert str(msg["List-Id"]) == "Petrozavodsk media <petrozavodsk-media.example.org>"
        assert str(msg["Precedence"]) == "bulk"
        assert str(msg["Auto-Submitted"]) == "auto-generated"
        assert msg.get_content_type() == "multipart/alternative"
        https, mailto = _unsubscribe_urls(msg)
        assert https.startswith("https://news.example.org/unsubscribe/")
        tok = read_token(cfg, https.rsplit("/", 1)[1])
        assert tok is not None and (tok.email, tok.list_id) == (addr, "petrozavodsk-media")
        assert mailto.startswith("mailto:news@example.org?subject=unsubscribe%20")
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        # The footer link is this recipient's own, in both parts; no marker is left.
        assert https in text and f'href="{https}"' in html
        assert "%%" not in text and "%%" not in html
        assert "Рыночная площадь Йоэнсуу обновится" in html
    # Raw bytes: 7-bit clean headers (RFC 2047 words for Cyrillic), CRLF line ends.
    raw = smtp_server.envelopes[0][2]
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert header_block.isascii() and b"=?utf-8?" in header_block
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    with db.session() as s:
        digest = s.get(Digest, did)
        assert digest is not None and digest.state == "sent" and digest.sent_at == NOW
    assert {d.status for d in _deliveries(db, did).values()} == {"sent"}

    again = run_send(db, cfg, now=NOW + timedelta(hours=1), digest_id=did)
    assert again.sent == 0
    assert len(smtp_server.messages) == 3  # nobody got it twice


def test_suppressed_recipients_get_nothing(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    with db.session() as s:  # before approval: never enqueued
        suppress(s, "orlov@example.org", list_id=None, reason="complained", now=NOW)
    did = seed_digest(db, cfg, PEOPLE)
    assert set(_deliveries(db, did)) == {"anna@example.org", "desk@example.org"}
    with db.session() as s:  # after approval, before sending: honoured at send time
        suppress(
            s, "desk@example.org", list_id="petrozavodsk-media", reason="unsubscribed", now=NOW
        )

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert (report.sent, report.skipped_suppressed) == (1, 1)
    assert [parseaddr(str(m["To"]))[1] for m in smtp_server.messages] == ["anna@example.org"]
    assert _deliveries(db, did)["desk@example.org"].status == "suppressed"


def test_permanent_550_suppresses_the_address_and_451_is_retried_later(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    did = seed_digest(db, cfg, PEOPLE)
    smtp_server.refuse["orlov@example.org"] = "550 5.1.1 no such user"
    smtp_server.refuse["desk@example.org"] = "451 4.7.1 greylisted, try later"

    first = run_send(db, cfg, now=NOW, digest_id=did)

    assert (first.sent, first.failed_permanent, first.failed_retrying) == (1, 1, 1)
    assert not first.ok
    rows = _deliveries(db, did)
    assert rows["orlov@example.org"].status == "failed"
    assert "550" in (rows["orlov@example.org"].last_error or "")
    retry = rows["desk@example.org"]
    assert retry.status == "retrying" and retry.next_attempt_at is not None
    assert retry.next_attempt_at > NOW
    with db.session() as s:
        sup = s.scalars(select(Suppression)).all()
        assert [(x.email, x.reason, x.list_id) for x in sup] == [
            ("orlov@example.org", "bounced", None)
        ]
        assert s.get(Digest, did).state == "sending"  # type: ignore[union-attr]

    # Not due yet: nothing happens.
    assert run_send(db, cfg, now=NOW + timedelta(seconds=30), digest_id=did).sent == 0
    smtp_server.refuse.clear()
    later = run_send(db, cfg, now=retry.next_attempt_at, digest_id=did)

    assert (later.sent, later.failed_permanent) == (1, 0)
    assert len(smtp_server.received_by("desk@example.org")) == 1
    assert smtp_server.received_by("orlov@example.org") == []  # a bounce is not retried
    with db.session() as s:
        assert s.get(Digest, did).state == "sent"  # type: ignore[union-attr]


def test_a_dropped_connection_is_reopened(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
) -> None:
    server = SMTPServer().start()
    cfg = delivery_config(write_config, smtp_port=server.port, connections=1)
    db = db_for(cfg)
    first = seed_digest(db, cfg, [("", "a@example.org")])
    mailer = SmtpMailer(cfg)  # shared: its connection is kept between the two sends
    assert run_send(db, cfg, now=NOW, digest_id=first, mailer=mailer).sent == 1
    # The server goes away (closing our idle connection) and comes back on the same port.
    server.stop()
    again = SMTPServer()
    again.port = server.port
    from aiosmtpd.controller import Controller

    again._controller = Controller(
        server._controller.handler, hostname="127.0.0.1", port=server.port
    )
    again.start()
    try:
        d2_id = seed_digest(db, cfg, [("", "b@example.org")], period_start=date(2026, 11, 16))
        report = run_send(db, cfg, now=NOW, digest_id=d2_id, mailer=mailer)
    finally:
        mailer.close()
        again.stop()
    # Both list members get the second digest through the reopened connection (the old
    # one died with the server: without the reconnect these would be "connection lost").
    assert report.sent == 2 and report.ok
    assert len(server.received_by("b@example.org")) == 1  # the same handler kept collecting


def test_sending_is_paced_to_the_configured_rate(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port, rate=10, connections=1)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 30)
    fake = {"t": 0.0}

    def clock() -> float:
        return fake["t"]

    def sleep(seconds: float) -> None:
        fake["t"] += seconds

    report = run_send(db, cfg, now=NOW, digest_id=did, clock=clock, sleep=sleep)

    assert report.sent == 30
    # 30 messages at 10/s in chunks of at most a second's worth (10): the first chunk goes
    # at once, the last may start no earlier than 2 s in. Without pacing the fake clock
    # would not move at all.
    assert fake["t"] >= (30 - 10) / 10


def test_outbox_backend_writes_one_eml_per_recipient_and_a_rerun_adds_none(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    tmp_path: Path,
) -> None:
    cfg = delivery_config(write_config, backend="outbox")
    db = db_for(cfg)
    did = seed_digest(db, cfg, PEOPLE)
    assert run_send(db, cfg, now=NOW, digest_id=did).sent == 3
    files = sorted((tmp_path / "var" / "outbox").glob("*.eml"))
    assert len(files) == 3
    msgs = [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]
    assert {m["Message-ID"] for m in msgs} == {d.message_id for d in _deliveries(db, did).values()}
    with db.session() as s:  # force a resend of one row: same Message-ID, same file
        row = s.scalars(select(Delivery).where(Delivery.digest_id == did)).first()
        assert row is not None
        row.status = "pending"
        s.get(Digest, did).state = "sending"  # type: ignore[union-attr]
    assert run_send(db, cfg, now=NOW, digest_id=did).sent == 1
    assert len(list((tmp_path / "var" / "outbox").glob("*.eml"))) == 3


def test_enqueue_is_idempotent_and_makes_one_row_per_address_across_lists(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
) -> None:
    cfg = delivery_config(write_config, backend="outbox")
    db = db_for(cfg)
    did = seed_digest(db, cfg, PEOPLE, enqueue=False)
    from newsexchange.db import Contact, ListMembership

    with db.session() as s:
        anna = s.scalar(select(Contact).where(Contact.email == "anna@example.org"))
        assert anna is not None
        anna.memberships.append(ListMembership(list_id="karelia-press"))
    with db.session() as s:
        digest = s.get(Digest, did)
        assert digest is not None
        assert enqueue_deliveries(s, cfg, digest, now=NOW) == 3
        assert enqueue_deliveries(s, cfg, digest, now=NOW) == 0
    rows = _deliveries(db, did)
    assert len(rows) == 3
    assert rows["anna@example.org"].list_id == "petrozavodsk-media"  # the exchange's first list
    ids = [d.message_id for d in rows.values()]
    assert len(set(ids)) == 3
    assert all(re.fullmatch(rf"<nx\.{did}\.[0-9a-f]{{20}}@example\.org>", i) for i in ids)


def test_only_an_approved_digest_can_be_sent(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    did = seed_digest(db, cfg, PEOPLE, state="awaiting_approval", enqueue=False)
    with pytest.raises(DeliveryError, match="only an approved digest"):
        run_send(db, cfg, now=NOW, digest_id=did)
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    "content",
    [
        "Plain English digest.\n" * 300 + "Unsubscribe: %%UNSUBSCRIBE_URL%%\n",
        "Новости Йоэнсуу и Северной Карелии.\n" * 300 + "Отписаться: %%UNSUBSCRIBE_URL%%",
        "%%UNSUBSCRIBE_URL%% first, " + "ж" * 5000 + " and again %%UNSUBSCRIBE_URL%%\n",
        "no marker at all, ünïcödé\n" * 10,
    ],
)
def test_body_encoded_once_and_tail_per_recipient_decodes_to_the_personal_text(
    content: str,
) -> None:
    import base64
    import binascii

    from newsexchange.delivery.send import _Body

    url = "https://news.example.org/unsubscribe/eyJlIjoiYSJ9.sig-_x"
    for is_html in (False, True):
        body = _Body(content, is_html=is_html)
        encoded = body.render(url)
        assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
        assert b"\n" not in encoded.replace(b"\r\n", b"")  # CRLF only
        decode = base64.b64decode if body.cte == "base64" else binascii.a2b_qp
        decoded = decode(encoded)
        expected = content.replace("\n", "\r\n").replace("%%UNSUBSCRIBE_URL%%", url)
        assert decoded.decode("utf-8").rstrip("\r\n") == expected.rstrip("\r\n")
    # Cyrillic goes base64 (a third bigger), English stays readable quoted-printable.
    if content.startswith("Plain"):
        assert _Body(content, is_html=False).cte == "quoted-printable"
    if content.startswith("Новости"):
        assert _Body(content, is_html=False).cte == "base64"


def test_pipelined_smtp_delivers_and_classifies_replies(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
) -> None:
    """A server offering PIPELINING (RFC 2920) gets MAIL, RCPT and DATA in one write; the
    replies are still told apart per recipient."""
    from aiosmtpd.controller import Controller

    received: list[tuple[list[str], bytes]] = []

    class Handler:
        async def handle_EHLO(
            self,
            server: object,
            session: object,
            envelope: object,
            hostname: str,
            responses: list[str],
        ) -> list[str]:
            session.host_name = hostname  # type: ignore[attr-defined]  # (the hook's job)
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

        async def handle_RCPT(
            self,
            server: object,
            session: object,
            envelope: object,
            address: str,
            options: list[str],
        ) -> str:
            if address.startswith("gone"):
                return "550 5.1.1 no such user"
            if address.startswith("busy"):
                return "452 4.2.2 mailbox full"
            envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
            return "250 OK"

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            received.append((list(envelope.rcpt_tos), envelope.content))  # type: ignore[attr-defined]
            return "250 OK"

    from tests.servers import _free_port

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    calls = {"pipelined": 0}

    class CountingMailer(SmtpMailer):
        def _send_pipelined(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls["pipelined"] += 1
            return super()._send_pipelined(*args, **kwargs)

    try:
        cfg = delivery_config(write_config, smtp_port=port)
        db = db_for(cfg)
        did = seed_digest(
            db,
            cfg,
            [
                ("", "ok1@example.org"),
                ("", "gone@example.org"),
                ("", "busy@example.org"),
                ("", "ok2@example.org"),
            ],
        )
        report = run_send(db, cfg, now=NOW, digest_id=did, mailer=CountingMailer(cfg))
    finally:
        controller.stop()
    assert calls["pipelined"] == 4
    assert (report.sent, report.failed_permanent, report.failed_retrying) == (2, 1, 1), (
        report.failures
    )
    assert sorted(r[0][0] for r in received) == ["ok1@example.org", "ok2@example.org"]
    rows = _deliveries(db, did)
    assert (
        rows["gone@example.org"].status == "failed"
        and rows["busy@example.org"].status == "retrying"
    )
    with db.session() as s:
        assert s.scalars(select(Suppression.email)).all() == ["gone@example.org"]


class _Stop(Exception):
    pass


def test_a_stopped_send_gives_back_its_claims_and_the_next_run_finishes_without_repeats(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 150)

    def stop_after_first_chunk(done: int, total: int) -> None:
        if done > 0:
            raise _Stop  # what the service does on SIGTERM

    with pytest.raises(_Stop):
        run_send(db, cfg, now=NOW, digest_id=did, progress=stop_after_first_chunk)

    statuses = [d.status for d in _deliveries(db, did).values()]
    first = len(smtp_server.messages)
    assert 0 < first < 150 and statuses.count("sent") == first
    assert "claimed" not in statuses  # nothing left waiting for a lease to expire
    report = run_send(db, cfg, now=NOW, digest_id=did)
    assert report.sent == 150 - first and report.pending == 0
    received = [parseaddr(str(m["To"]))[1] for m in smtp_server.messages]
    assert len(received) == len(set(received)) == 150


def test_two_senders_at_once_share_the_work_and_mail_nobody_twice(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
    any_db_url: str,
) -> None:
    import threading

    cfg = delivery_config(write_config, smtp_port=smtp_server.port, database_url=any_db_url)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 300)
    reports = []

    def sender(name: str) -> None:
        reports.append(run_send(db, cfg, now=NOW, digest_id=did, worker=name))

    threads = [threading.Thread(target=sender, args=(f"host:1:{n}",)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(r.sent for r in reports) == 300
    received = [parseaddr(str(m["To"]))[1] for m in smtp_server.messages]
    assert len(received) == len(set(received)) == 300
    with db.session() as s:
        assert s.get(Digest, did).state == "sent"  # type: ignore[union-attr]


def test_a_run_longer_than_the_lease_keeps_its_claims_and_nobody_is_mailed_twice(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    """Issue 13's double send: claims stamped with the run's start time looked stale to any
    other sender once the run was older than the lease (10 min then; now the claim TTL,
    ``mail.claim_ttl_seconds``, 30 s by default). Here the run takes 12.5 minutes of its
    clock (30 chunks, 25 s each: each shorter than the TTL, as the driven clock jumps
    between heartbeats) and, after every chunk, a second sender looks for stale claims at
    that moment with the same TTL: it must find none."""
    cfg = delivery_config(write_config, smtp_port=smtp_server.port, rate=10, connections=1)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 300)
    t = [0.0]

    def clock() -> float:
        return t[0]

    def sleep(seconds: float) -> None:
        t[0] += seconds

    stolen: list[int] = []

    def between_chunks(done: int, total: int) -> None:
        if done == 0:
            return  # before the first claim: every row is simply due
        t[0] += 25  # the chunk took 25 s on the wire
        with db.session() as s:
            rows = claim(
                s,
                did,
                worker="other-host:1:b",
                now=NOW + timedelta(seconds=t[0]),
                lease=timedelta(seconds=cfg.mail.claim_ttl_seconds),
            )
            stolen.extend(d.id for d in rows)
            for d in rows:  # leave them as they were: this sender only looked
                d.status, d.claimed_by = "pending", None

    report = run_send(
        db, cfg, now=NOW, digest_id=did, progress=between_chunks, clock=clock, sleep=sleep
    )
    assert t[0] > 10 * 60  # the run outlived the old lease, and the TTL many times over
    assert stolen == []
    assert report.sent == 300
    received = [parseaddr(str(m["To"]))[1] for m in smtp_server.messages]
    assert len(received) == len(set(received)) == 300


def test_starttls_required_but_not_offered_stops_the_send_cleanly(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    text = cfg.path.read_text().replace("connections: 2,", "connections: 2, starttls: true,")  # type: ignore[union-attr]
    cfg.path.write_text(text)  # type: ignore[union-attr]
    from newsexchange.config import load_config

    cfg = load_config(cfg.path, env={"NEWSEXCHANGE_SECRET_KEY": "s3cret"})
    assert cfg.mail.smtp.starttls
    db = db_for(cfg)
    did = seed_digest(db, cfg, PEOPLE)

    report = run_send(db, cfg, now=NOW, digest_id=did)

    # Never falls back to plain text: nothing is sent, nothing is marked failed or bounced.
    assert report.sent == 0 and smtp_server.messages == []
    assert {d.status for d in _deliveries(db, did).values()} <= {"retrying", "pending"}
    assert report.failed_permanent == 0
    with db.session() as s:
        assert s.scalars(select(Suppression)).all() == []


@pytest.mark.parametrize(
    "name",
    [
        "Anna Smirnova",
        "Орлов, Дмитрий",
        "Smith, John",
        "Александра Константиновна Верещагина-Преображенская",
    ],
)
def test_to_header_decodes_back_to_the_name_and_address(name: str) -> None:
    from email.headerregistry import Address

    from newsexchange.delivery.send import _to_header

    value = _to_header(name, "x@example.org")
    assert value.isascii()
    msg = email.message_from_bytes(f"To: {value}\r\n\r\n".encode(), policy=email.policy.default)
    addr = msg["To"].addresses[0]
    assert isinstance(addr, Address)
    assert (addr.display_name, addr.addr_spec) == (name, "x@example.org")
