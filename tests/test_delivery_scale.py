"""Exactly once at scale (issue 13): the claims heartbeat, a shard waiting out others'
claims, one rate limit shared by every sender, set-based queueing and the approval count."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from email.utils import parseaddr

from sqlalchemy import select, update

from newsexchange.config import Config
from newsexchange.db import Contact, Database, Delivery, Digest, ListMembership
from newsexchange.db.queries import rates
from newsexchange.delivery.outbox import (
    claim,
    enqueue_deliveries,
    recipient_count,
    recipients_for,
)
from newsexchange.delivery.send import rate_limit_name, run_send
from newsexchange.delivery.unsubscribe import email_hash, suppress
from tests.servers import SMTPServer
from tests.test_delivery_crash import SlowSink
from tests.test_delivery_support import NOW, delivery_config, seed_digest


def _claimed_by_other(db: Database, did: int, ids: list[int], *, at: datetime) -> None:
    with db.session() as s:
        s.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(status="claimed", claimed_by="other-host:4242:dead", claimed_at=at, attempts=1)
        )


def _ids(db: Database, did: int) -> list[int]:
    with db.session() as s:
        return list(
            s.scalars(select(Delivery.id).where(Delivery.digest_id == did).order_by(Delivery.id))
        )


def _statuses(db: Database, did: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with db.session() as s:
        for status in s.scalars(select(Delivery.status).where(Delivery.digest_id == did)):
            out[status] = out.get(status, 0) + 1
    return out


# -- the heartbeat --------------------------------------------------------------------------


def test_a_chunk_slower_than_the_claim_ttl_keeps_its_claims_through_the_heartbeat(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    """One chunk of 12 messages on a relay taking 0.6 s each is 7 s on the wire, longer
    than a 5 s TTL, with no chunk boundary to renew at: only the heartbeat thread keeps the
    claims. A second sender looks for stale claims every 0.3 s meanwhile (on the same
    timeline as the run) and must find none; everyone gets one copy."""
    sink = SlowSink(delay=0.6)
    sink.controller.start()
    try:
        cfg = delivery_config(write_config, smtp_port=sink.port, connections=1, claim_ttl=5)
        db = db_for(cfg)
        did = seed_digest(db, cfg, 12)
        started = time.monotonic()
        stolen: list[int] = []
        done = threading.Event()

        def other_sender() -> None:
            while not done.wait(0.3):
                moment = NOW + timedelta(seconds=time.monotonic() - started)
                with db.session() as s:
                    rows = claim(
                        s, did, worker="other-host:1:b", now=moment, lease=timedelta(seconds=5)
                    )
                    stolen.extend(d.id for d in rows if d.attempts > 1)
                    for d in rows:  # it only looked: put back what it took
                        d.status, d.claimed_by, d.attempts = "pending", None, d.attempts - 1

        looker = threading.Thread(target=other_sender, daemon=True)
        looker.start()
        try:
            report = run_send(db, cfg, now=NOW, digest_id=did)
        finally:
            done.set()
            looker.join(30)
        assert time.monotonic() - started > 5  # the chunk outlived the TTL
        assert stolen == []
        assert report.sent == 12
        assert sorted(r[0][0] for r in sink.received) == sorted(
            f"j{i:05d}@example.org" for i in range(12)
        )
        assert _statuses(db, did) == {"sent": 12}
        # The thread ended with the run: nothing named after this worker keeps beating.
        assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat ")]
    finally:
        sink.controller.stop()


# -- a shard waits out others' claims -------------------------------------------------------


def test_a_retried_shard_resumes_a_dead_workers_rows_within_the_ttl(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    """A worker on another host died holding 5 rows of a shard (just claimed: not stale).
    The shard retried elsewhere sends what is free, waits until those claims are a TTL old
    and then sends them too: the shard is done within about one TTL, not at the next
    dispatch."""
    cfg = delivery_config(write_config, smtp_port=smtp_server.port, claim_ttl=30)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 10)
    ids = _ids(db, did)
    _claimed_by_other(db, did, ids[:5], at=NOW)
    t = [0.0]

    def sleep(seconds: float) -> None:
        t[0] += seconds

    report = run_send(
        db,
        cfg,
        now=NOW,
        digest_id=did,
        id_range=(ids[0], ids[-1]),
        clock=lambda: t[0],
        sleep=sleep,
    )
    assert report.sent == 10 and report.pending == 0
    assert 30 <= t[0] <= 30 + 30 / 6 + 1  # one TTL, and at most one look more
    assert sorted(parseaddr(str(m["To"]))[1] for m in smtp_server.messages) == [
        f"j{i:05d}@example.org" for i in range(10)
    ]
    with db.session() as s:
        assert s.get(Digest, did).state == "sent"  # type: ignore[union-attr]


def test_a_shard_stops_waiting_when_the_other_sender_finishes_its_rows(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    """A live sender holding part of the shard marks its rows sent while this run waits:
    the run ends at once, and sends none of them itself (no double send)."""
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 6)
    ids = _ids(db, did)
    _claimed_by_other(db, did, ids[:3], at=NOW)
    t = [0.0]

    def sleep(seconds: float) -> None:
        t[0] += seconds
        with db.session() as s:  # the other sender's "250"s are recorded
            s.execute(update(Delivery).where(Delivery.id.in_(ids[:3])).values(status="sent"))

    report = run_send(
        db, cfg, now=NOW, digest_id=did, id_range=(ids[0], ids[-1]), clock=lambda: t[0], sleep=sleep
    )
    assert report.sent == 3 and report.pending == 0
    assert t[0] <= 30 / 6 + 0.1  # one look, not a TTL
    assert len(smtp_server.messages) == 3


def test_without_a_shard_the_run_does_not_wait_for_live_claims(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 4)
    ids = _ids(db, did)
    _claimed_by_other(db, did, ids[:2], at=NOW)
    t = [0.0]

    def sleep(seconds: float) -> None:
        t[0] += seconds

    report = run_send(db, cfg, now=NOW, digest_id=did, clock=lambda: t[0], sleep=sleep)
    assert report.sent == 2 and report.pending == 2 and t[0] == 0.0


# -- one rate limit for the relay -----------------------------------------------------------


def test_reservations_follow_each_other_and_idle_time_is_not_saved_up(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database], any_db_url: str
) -> None:
    cfg = delivery_config(write_config, env={"NEWSEXCHANGE_DATABASE_URL": any_db_url})
    db = db_for(cfg)
    name = rate_limit_name(cfg)
    assert name == "mail:smtp:127.0.0.1:25"
    with db.session() as s:
        first = rates.reserve(s, name, 1.0, now=NOW)
    with db.session() as s:
        second = rates.reserve(s, name, 1.0, now=NOW)
    assert first == 0.0
    assert 0.9 <= second <= 1.0  # booked after the first second (PostgreSQL: its own clock)
    if db.engine.dialect.name == "sqlite":
        with db.session() as s:  # a minute idle: the next booking starts now, no burst
            assert rates.reserve(s, name, 1.0, now=NOW + timedelta(minutes=1)) == 0.0
        with db.session() as s:
            assert rates.reserve(s, name, 0.5, now=NOW + timedelta(minutes=1)) == 1.0


def test_two_senders_together_stay_within_the_relays_rate(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
    any_db_url: str,
) -> None:
    """Two senders (threads with their own runs, as two workers) each take one shard of 100
    deliveries at 20/s. With a pacer each they sent ~40/s together (issue 13: 92/s at 50/s);
    sharing the budget, by any moment the relay has received at most 20/s since the first
    message plus one booked block (a chunk is a second's worth, 20)."""
    rate = 20
    cfg = delivery_config(
        write_config,
        smtp_port=smtp_server.port,
        rate=rate,
        connections=1,
        env={"NEWSEXCHANGE_DATABASE_URL": any_db_url},
    )
    db = db_for(cfg)
    did = seed_digest(db, cfg, 100)
    ids = _ids(db, did)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            samples.append((time.monotonic(), len(smtp_server.messages)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    reports = []
    errors: list[BaseException] = []

    def sender(id_range: tuple[int, int]) -> None:
        try:
            reports.append(run_send(db, cfg, now=NOW, digest_id=did, id_range=id_range))
        except BaseException as exc:
            errors.append(exc)

    halves = [(ids[0], ids[49]), (ids[50], ids[-1])]
    threads = [threading.Thread(target=sender, args=(r,)) for r in halves]
    started = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join(5)
    assert errors == []
    assert sum(r.sent for r in reports) == 100
    received = [parseaddr(str(m["To"]))[1] for m in smtp_server.messages]
    assert len(received) == len(set(received)) == 100
    # 100 at 20/s: the last of five one-second blocks starts 4 s in (per-process pacers: 2 s).
    assert elapsed >= (100 - rate) / rate - 0.3
    first = next(ts for ts, n in samples if n > 0)
    for ts, n in samples:
        assert n <= rate * (ts - first) + rate + 2, (ts - first, n)


# -- bulk queueing and the approval count ---------------------------------------------------


def test_bulk_queueing_honours_every_kind_of_suppression_and_one_row_per_address(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database], any_db_url: str
) -> None:
    """Set-based recipients: a global suppression, one for this list only, one kept as a
    hash (an erased address), one for the other list (does not count here), and an address
    on both lists (one delivery, through the first list). The approval count agrees."""
    cfg = delivery_config(write_config, env={"NEWSEXCHANGE_DATABASE_URL": any_db_url})
    db = db_for(cfg)
    did = seed_digest(db, cfg, 50, enqueue=False)
    with db.session() as s:
        both = s.scalars(select(Contact).where(Contact.email == "j00007@example.org")).one()
        s.add(ListMembership(contact_id=both.id, list_id="karelia-press"))
        other = Contact(email="Only.Karelia@example.org", name="K", language="ru")
        other.memberships.append(ListMembership(list_id="karelia-press"))
        s.add(other)
        suppress(s, "j00001@example.org", list_id=None, reason="bounced", now=NOW)
        suppress(s, "j00002@example.org", list_id="petrozavodsk-media", reason="x", now=NOW)
        suppress(s, "j00003@example.org", list_id="karelia-press", reason="x", now=NOW)
        s.flush()
        from newsexchange.db import Suppression

        s.add(Suppression(email=email_hash("j00004@example.org"), list_id=None, reason="erased"))
        s.flush()
        digest = s.get(Digest, did)
        assert digest is not None
        who = recipients_for(s, cfg, digest)
        counted = recipient_count(s, cfg, digest)
        assert enqueue_deliveries(s, cfg, digest, now=NOW) == len(who)
        assert enqueue_deliveries(s, cfg, digest, now=NOW) == 0  # idempotent
        rows = list(s.scalars(select(Delivery).where(Delivery.digest_id == did)))
    emails = {r.email: r for r in rows}
    assert "j00001@example.org" not in emails and "j00002@example.org" not in emails
    assert "j00004@example.org" not in emails  # suppressed by its hash
    assert "j00003@example.org" in emails  # suppressed on the other list only
    assert emails["j00007@example.org"].list_id == "petrozavodsk-media"
    assert emails["Only.Karelia@example.org"].list_id == "karelia-press"
    assert len(rows) == 50 - 3 + 1
    assert len({r.message_id for r in rows}) == len(rows)
    assert all(r.message_id.startswith(f"<nx.{did}.") for r in rows)
    # The count skips the hash-only suppression (an erased address has no contact in real
    # life; here the test keeps one): off by exactly that one.
    assert counted == len(rows) + 1


# -- SMTP latency ---------------------------------------------------------------------------


def test_smtp_connections_send_the_final_dot_without_waiting_for_a_delayed_ack(
    write_config: Callable[..., Config], smtp_server: SMTPServer
) -> None:
    """The message's end (".") is a small write after the body; with Nagle's algorithm it
    waited ~40 ms for the server's delayed ACK, per message. The socket has TCP_NODELAY."""
    import socket

    from newsexchange.mail.smtp import SmtpMailer

    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    mailer = SmtpMailer(cfg)
    conn = mailer._connect()
    try:
        assert conn.sock is not None
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        conn.quit()
