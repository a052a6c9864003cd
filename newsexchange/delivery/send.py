"""The send step: deliver approved digests from the outbox, exactly once per recipient.

``run_send(db, config, *, now, digest_id=None)`` is what ``newsexchange send ID`` and the
scheduler's dispatch job call. For each digest that is approved (or already sending):

1. **claim** a batch of due deliveries (pending, retry due, or claimed by someone whose claim
   was not renewed for ``mail.claim_ttl_seconds`` or whose local process is gone) in one
   short transaction: status ``claimed``, ``claimed_at``, ``claimed_by`` = host:pid:nonce.
   PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so several senders share the work
   without waiting on each other; SQLite serializes writers (``BEGIN IMMEDIATE``) which gives
   the same result. While the run lives, a thread renews its claims every third of the TTL
   (:mod:`.heartbeat`), so a live run never loses them and a dead one's are taken within the
   TTL, on any host.
2. **send** them in small chunks through the configured mailer, paced to
   ``mail.rate_per_second`` *for every sender of that backend together*: the budget is a
   shared GCRA row in ``rate_limits`` named after the backend (:func:`rate_limit_name`),
   booked a chunk (≤ 1 s of budget) at a time (:class:`~newsexchange.common.pacing.
   SharedPacer`, ``db/queries/rates.py``). The clock of that row is PostgreSQL's
   ``clock_timestamp()`` (one timeline for every host); on SQLite, where every sender is on
   the one host, the run's own clock. Suppressions are checked again right before (an
   unsubscribe that arrived after approval is honoured).
3. **mark**: SMTP and outbox report each message the moment the server accepted it and the
   row becomes ``sent`` in its own tiny transaction; then the rest of the chunk is recorded:
   ``retrying`` with exponential backoff (or the provider's Retry-After) for temporary
   failures, ``failed`` for permanent ones, and the address suppressed when the recipient
   itself was refused (a hard bounce). SendGrid's rows are marked when the request returns.

The one window no sender can close: the server accepted a message and we crashed before
the "sent" commit (for SMTP: between the server's "250" and a sub-millisecond UPDATE; at most
one message per connection; for SendGrid: one request). That delivery is still ``claimed``;
the next run sees its claimer is dead (or its lease expired) and sends it again — *with the
same Message-ID*, which is minted once per delivery in the outbox. Receiving systems that
deduplicate by Message-ID (Gmail, Mailman, most archivers, our tests' sink) recognise it as
the same message, and a reader's client threads it as one.

Rendering: once per digest, language and list (``render_digest`` + ``to_email``), then per
recipient only To, Message-ID and the unsubscribe URL change, by byte/string substitution
in a pre-serialized template (see :class:`~.personalize.PreparedDigest`) — no re-rendering,
no email package objects per recipient.

This module is the loop only. The pieces: :mod:`.due` (which digests), :mod:`.outbox` (the
rows: enqueue, claim, record, hand back), :mod:`.outcome` (what a result means for its row,
pure), :mod:`.personalize` (each copy), :mod:`.chunk` (one chunk sent and recorded),
:mod:`.marker` (the "sent" commits as the server accepts).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from newsexchange.common.leases import owner_id
from newsexchange.common.pacing import Pacer, SharedPacer
from newsexchange.config import Config
from newsexchange.db import Database, Digest
from newsexchange.db.queries import deliveries as queries
from newsexchange.db.queries import rates
from newsexchange.delivery.chunk import Thread, dispatch, prepare_chunk
from newsexchange.delivery.due import digests_to_send
from newsexchange.delivery.heartbeat import Heartbeat
from newsexchange.delivery.outbox import (
    CLAIM_BATCH,
    apply_result,
    claim,
    enqueue_deliveries,
    release,
    release_own,
)
from newsexchange.delivery.outcome import MAX_ATTEMPTS
from newsexchange.delivery.personalize import (
    UNSUBSCRIBE_MARKER,
    PreparedDigest,
    Renderer,
    _Body,
    _to_header,
    list_headers,
)
from newsexchange.delivery.progress import Progress, send_progress
from newsexchange.delivery.report import SendReport
from newsexchange.digest.states import SENDABLE, DigestState, move
from newsexchange.mail import Mailer, get_mailer

__all__ = [
    "CHUNK_PER_CONNECTION",
    "CLAIM_BATCH",
    "MAX_ATTEMPTS",
    "SENDABLE",
    "UNSUBSCRIBE_MARKER",
    "PreparedDigest",
    "Progress",
    "Renderer",
    "SendReport",
    "SendStopped",
    "_Body",
    "_to_header",
    "apply_result",
    "claim",
    "list_headers",
    "rate_limit_name",
    "run_send",
    "send_progress",
    "worker_id",
]

log = logging.getLogger(__name__)

# Messages handed to the mailer at once, per SMTP connection. Each accepted message is
# recorded on its own (see marker.Marker), so this only sets how often the database is read
# and how bursty pacing is — not how much could be resent after a crash.
CHUNK_PER_CONNECTION = 50


#: A chunk on the wire: its thread and how many deliveries it holds.
_InFlight = tuple[Thread, int]


class SendStopped(Exception):
    """Raised by a ``progress`` callback to end a send between two chunks: ``run_send`` then
    hands back what it claimed and returns its report with ``stopped`` set (the console's
    SIGTERM; the service raises its own StopRequested, which propagates)."""


def rate_limit_name(config: Config) -> str:
    """The shared rate limit a backend's senders book: one per relay (host and port) for
    SMTP, one for the SendGrid account, one for the outbox directory's backend."""
    mail = config.mail
    if mail.backend == "smtp":
        return f"mail:smtp:{mail.smtp.host}:{mail.smtp.port}"[:100]
    return f"mail:{mail.backend}"


def shared_pacer(
    db: Database,
    config: Config,
    *,
    moment: Callable[[], datetime],
    sleep: Callable[[float], None] = time.sleep,
) -> SharedPacer:
    """The pacer of every sender of this backend on ``db`` (see the module docstring for its
    clock: ``moment`` is used on SQLite only)."""
    name = rate_limit_name(config)
    on_sqlite = db.engine.dialect.name == "sqlite"

    def reserve(seconds: float) -> float:
        with db.session() as s:
            return rates.reserve(s, name, seconds, now=moment() if on_sqlite else None)

    return SharedPacer(config.mail.rate_per_second, reserve, sleep=sleep)


def worker_id() -> str:
    """This process's name as a claimer (``host:pid:random``, see common.leases)."""
    return owner_id()


def run_send(
    db: Database,
    config: Config,
    *,
    now: datetime,
    digest_id: int | None = None,
    id_range: tuple[int, int] | None = None,
    progress: Progress | None = None,
    mailer: Mailer | None = None,
    worker: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    pacer: Pacer | SharedPacer | None = None,
) -> SendReport:
    """Deliver every due delivery of approved digests (or of one digest; of one shard of it
    with ``id_range``, inclusive, see :mod:`.shards`). Safe to run again and concurrently:
    each row is sent by whoever claimed it.

    ``pacer`` defaults to the backend's shared rate limit (:func:`shared_pacer`); ``clock``
    and ``sleep`` drive the run's time (claims, the shard's wait, pacing on SQLite)."""
    started = clock()
    report = SendReport()
    worker = worker or worker_id()
    with db.session() as s:
        digests = [(d.id, d.exchange_id) for d in digests_to_send(s, config, digest_id)]
    if not digests:
        report.elapsed = clock() - started
        return report
    _warn_without_https(config)
    own_mailer = mailer is None
    mailer = mailer or get_mailer(config)

    def moment() -> datetime:  # as _Run.moment, for the pacer made before the run
        return now + timedelta(seconds=max(0.0, clock() - started))

    run = _Run(
        db,
        config,
        mailer,
        now=now,
        worker=worker,
        report=report,
        progress=progress,
        pacer=pacer or shared_pacer(db, config, moment=moment, sleep=sleep),
        renderer=Renderer(config, now=now),  # each digest rendered once per run
        clock=clock,
        started=started,
        id_range=id_range,
        sleep=sleep,
    )
    heartbeat = Heartbeat(db, worker, interval=run.ttl.total_seconds() / 3, moment=run.moment)
    try:
        with heartbeat:
            run.all(digests)
    finally:
        if own_mailer:
            mailer.close()
    report.elapsed = clock() - started
    log.info(
        "send finished",
        extra={k: v for k, v in report.to_json().items() if k not in ("failures", "digests")},
    )
    return report


def _warn_without_https(config: Config) -> None:
    if not config.public_url.startswith("https://"):
        # RFC 8058 §3.1: the one-click URI must be https; mail providers ignore an http one
        # (and Gmail/Yahoo's bulk-sender rules then count the list as non-compliant).
        log.warning(
            "public_url is not https: one-click unsubscribe will not be offered by mail clients",
            extra={"public_url": config.public_url},
        )


@dataclass
class _Run:
    """One ``run_send``: what every digest of it shares."""

    db: Database
    config: Config
    mailer: Mailer
    now: datetime
    worker: str
    report: SendReport
    progress: Progress | None
    pacer: Pacer | SharedPacer
    renderer: Renderer
    clock: Callable[[], float]
    started: float
    id_range: tuple[int, int] | None = None
    sleep: Callable[[float], None] = time.sleep

    @property
    def ttl(self) -> timedelta:
        """How long a claim lives without renewal (``mail.claim_ttl_seconds``)."""
        return timedelta(seconds=self.config.mail.claim_ttl_seconds)

    def moment(self) -> datetime:
        """The run's ``now`` moved on by the time the run has taken: what claims are stamped
        with and renewed to. (Stamped with the start time, a run's claims looked stale to
        every other sender once the run was older than the lease: a double send.)"""
        return self.now + timedelta(seconds=max(0.0, self.clock() - self.started))

    def heartbeat(self) -> None:
        """Renew this worker's claims now (besides the :class:`.Heartbeat` thread: before
        each chunk, so a run on a driven clock, as in tests, keeps its claims too)."""
        with self.db.session() as s:
            queries.renew_claims(s, self.worker, now=self.moment())

    @property
    def chunk_size(self) -> int:
        if self.mailer.personalizes:
            return 1000  # one provider request per chunk
        rate = self.config.mail.rate_per_second
        connections = self.config.mail.smtp.connections
        # At most about one second's worth per chunk, so pacing never bursts beyond that.
        return max(connections, min(CHUNK_PER_CONNECTION * connections, int(rate)))

    def all(self, digests: list[tuple[int, str]]) -> None:
        """Each digest in turn; what this worker claimed goes back if it stops early."""
        try:
            for did, exchange_id in digests:
                self.digest(did, exchange_id)
        except SendStopped as exc:
            # Asked to stop between two chunks (SIGTERM to `newsexchange send`): every
            # accepted message is recorded, and what this worker claimed but did not send
            # goes back now.
            self.report.stopped = str(exc) or "stop requested"
            self.report.handed_back = release_own(self.db, self.worker)
            with self.db.session() as s:
                self.report.pending = sum(queries.remaining(s, did) for did, _ex in digests)
        except BaseException:
            # Stopped (SIGTERM in the service, Ctrl-C at the console) or failed: what this
            # worker claimed but did not send goes back at once, not after the lease.
            release_own(self.db, self.worker)
            raise

    def digest(self, did: int, exchange_id: str) -> None:
        """Claim and send a digest's due deliveries batch by batch, then record its state."""
        with self.db.session() as s:
            digest = s.get(Digest, did)
            assert digest is not None
            if digest.state == DigestState.APPROVED:
                # Anyone added to the lists between approval and now is included; the
                # outbox is idempotent so nothing is doubled.
                enqueue_deliveries(s, self.config, digest, now=self.now)
                move(digest, "start_send")
            total = queries.remaining(s, did)
        done = self._report_progress(0, total)
        waiting_since: float | None = None
        in_flight: _InFlight | None = None  # the last chunk of the batch before, on the wire
        try:
            while self.report.error is None:
                with self.db.session() as s:
                    limit = max(CLAIM_BATCH, self.chunk_size)
                    claimed = claim(
                        s,
                        did,
                        worker=self.worker,
                        now=self.moment(),
                        limit=limit,
                        lease=self.ttl,
                        id_range=self.id_range,
                    )
                    claimed_ids = [d.id for d in claimed]
                if claimed_ids:
                    waiting_since = None
                    done, in_flight = self._send_batch(did, claimed_ids, done, total, in_flight)
                    continue
                done, in_flight = self._land(in_flight, done, total), None
                if waiting_since is None:
                    waiting_since = self.clock()
                if not self._wait_for_others(did, waiting_since):
                    break
            done, in_flight = self._land(in_flight, done, total), None
        finally:
            if in_flight is not None:  # stopping on an error: the chunk on the wire lands first
                with contextlib.suppress(Exception):
                    in_flight[0].join()
        self._finish(did, exchange_id)

    def _wait_for_others(self, did: int, since: float) -> bool:
        """A shard whose rows others still claim waits until those are finished or stale
        (then the loop takes them), sleeping in steps; True to look again. So a shard
        retried after its worker died resumes within about one TTL instead of leaving the
        rows to the next dispatch. Bounded by 1.5 TTL from ``since`` (a live claimer that
        keeps renewing is working; its rows are its own). Without a shard: never waits, as
        before (the next run takes what is left)."""
        if self.id_range is None:
            return False
        with self.db.session() as s:
            held, oldest = queries.claims_in_range(s, did, self.worker, self.id_range)
        if not held or oldest is None:
            return False
        ttl = self.ttl.total_seconds()
        if self.clock() - since > 1.5 * ttl:
            log.info(
                "shard still claimed by another sender; leaving it",
                extra={"digest": did, "range": self.id_range, "claimed": held},
            )
            return False
        until_stale = (oldest - self.moment()).total_seconds() + ttl
        # Look again when the oldest claim goes stale, and at least every TTL/6 (rows
        # finished by their claimer end the wait early).
        self.sleep(min(max(until_stale, 0.0) + 0.05, ttl / 6))
        return True

    def _send_batch(
        self,
        did: int,
        claimed_ids: list[int],
        done: int,
        total: int,
        in_flight: _InFlight | None = None,
    ) -> tuple[int, _InFlight | None]:
        """Send a claimed batch chunk by chunk. While one chunk is on the wire (a thread:
        the mailer mostly waits on sockets), the next is loaded and personalized here; the
        last one is returned still on the wire, so that the next batch is claimed and its
        first chunk prepared meanwhile (``in_flight``: the one handed over from the batch
        before). Returns (deliveries done, the chunk on the wire)."""
        report, size = self.report, self.chunk_size
        try:
            for i in range(0, len(claimed_ids), size):
                ids = claimed_ids[i : i + size]
                if i:
                    self.heartbeat()  # the rest of the batch, and the chunk on the wire
                sending, outgoing = prepare_chunk(
                    self.db, self.mailer, did, ids, report=report, renderer=self.renderer
                )
                if outgoing and report.error is None:
                    # Booked (and waited for) while the previous chunk is still on the
                    # wire: the booking's round trip to the rate limit's row no longer
                    # stops the connections between chunks. It never starts earlier than
                    # booked; a chunk booked and then handed back (the backend failed
                    # meanwhile) only leaves its share of the budget unused.
                    self.pacer.wait(len(outgoing))
                done, in_flight = self._land(in_flight, done, total), None
                if report.error is not None:
                    release(self.db, [d.id for d in sending], now=self.now, error=report.error)
                    continue
                thread = Thread(
                    dispatch,
                    self.db,
                    self.mailer,
                    sending,
                    outgoing,
                    now=self.now,
                    report=report,
                )
                thread.start()
                in_flight = (thread, len(ids))
        except BaseException:
            if in_flight is not None:  # the chunk on the wire lands before the error goes up
                with contextlib.suppress(Exception):
                    in_flight[0].join()
            raise
        return done, in_flight

    def _land(self, in_flight: _InFlight | None, done: int, total: int) -> int:
        """Wait for the chunk on the wire (if any) to be sent and recorded; report progress."""
        if in_flight is None:
            return done
        thread, size = in_flight
        thread.join()
        return self._report_progress(done + size, total)

    def _report_progress(self, done: int, total: int) -> int:
        if self.progress:
            self.progress(done, total)
        return done

    def _finish(self, did: int, exchange_id: str) -> None:
        """A digest with nothing left to send is sent; either way the report says where it is."""
        with self.db.session() as s:
            digest = s.get(Digest, did)
            assert digest is not None
            left = queries.remaining(s, did)
            self.report.pending += left
            if left == 0 and digest.state in SENDABLE:
                move(digest, "finish_send")
                digest.sent_at = self.now
            self.report.digests.append(
                {"id": did, "exchange": exchange_id, "state": digest.state, "remaining": left}
            )
