"""The sending paths' behaviour behind benchmarks/send_paths.py: no Nagle wait on the SMTP
connections, no deadlock between the claims heartbeat and the sent marks on PostgreSQL, and
the recipient's envelope address written without a parse per message."""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Database, Delivery
from newsexchange.db.queries import deliveries as queries
from newsexchange.delivery.outbox import claim
from newsexchange.mail.smtp import SmtpMailer, envelope_address
from tests.servers import SMTPServer
from tests.test_delivery_support import NOW, delivery_config, seed_digest


def test_every_smtp_connection_has_tcp_nodelay(write_config: Callable[..., Config]) -> None:
    """The body and the final "." are two writes; with Nagle on, the "." waited for the
    server's delayed ACK (~40 ms a message)."""
    server = SMTPServer().start()
    try:
        mailer = SmtpMailer(delivery_config(write_config, smtp_port=server.port))
        conn = mailer._checkout()
        try:
            assert conn.sock is not None
            assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            mailer._idle.put(conn)
            mailer.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "address",
    [
        "anna@example.org",
        "o'brien+news@xn--80ak6aa92e.example",
        "Anna <anna@example.org>",
        '"quoted local"@example.org',
        "",
    ],
)
def test_envelope_address_matches_smtplib(address: str) -> None:
    assert envelope_address(address) == smtplib.quoteaddr(address)


def test_heartbeat_does_not_deadlock_with_sent_marks(
    write_config: Callable[..., Config], pg_server_url: Callable[[], str]
) -> None:
    """The writer marks row B then row A in one transaction while the heartbeat renews the
    worker's claims. Before, the heartbeat locked A, waited for B, and the writer's update
    of A deadlocked (PostgreSQL aborted one of them after deadlock_timeout). Now the
    heartbeat skips the row being marked and returns at once."""
    url = pg_server_url()
    cfg = delivery_config(write_config, database_url=url)
    db = Database(url)
    try:
        digest_id = seed_digest(db, cfg, 3)
        with db.session() as s:
            rows = claim(s, digest_id, worker="w1", now=NOW, lease=timedelta(seconds=30))
            a, b, c = sorted(d.id for d in rows)
        later = NOW + timedelta(seconds=10)
        with db.engine.connect() as writer:
            queries.mark_sent(writer, [(b, "pid-b")], now=NOW)  # B locked, not committed
            renewed: list[int] = []
            errors: list[BaseException] = []

            def beat() -> None:
                try:
                    with db.session() as s:
                        renewed.append(queries.renew_claims(s, "w1", now=later))
                except BaseException as exc:
                    errors.append(exc)

            heartbeat = threading.Thread(target=beat)
            heartbeat.start()
            heartbeat.join(20)  # a bound for the old behaviour; the fixed one returns at once
            # Then A: the old heartbeat held A's lock here, and this deadlocked.
            queries.mark_sent(writer, [(a, "pid-a")], now=NOW)
            writer.commit()
            heartbeat.join(20)
            assert not heartbeat.is_alive()
            assert not errors
            assert renewed == [2]  # A and C (B was being marked)
        with db.session() as s:
            got = {
                d.id: d for d in s.scalars(select(Delivery).where(Delivery.digest_id == digest_id))
            }
            assert got[a].status == got[b].status == "sent"
            assert got[c].status == "claimed"
            assert got[c].claimed_at == later
    finally:
        db.dispose()
