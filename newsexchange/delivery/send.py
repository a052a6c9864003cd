"""The send step: deliver approved digests from the outbox, exactly once per recipient.

``run_send(db, config, *, now, digest_id=None)`` is what ``newsexchange send ID`` and the
scheduler's dispatch job call. For each digest that is approved (or already sending):

1. **claim** a batch of due deliveries (pending, retry due, or claimed by someone whose lease
   ran out or whose process is gone) in one short transaction: status ``claimed``,
   ``claimed_at``, ``claimed_by`` = host:pid:nonce. PostgreSQL claims with
   ``FOR UPDATE SKIP LOCKED`` so several senders share the work without waiting on each other;
   SQLite serializes writers (``BEGIN IMMEDIATE``) which gives the same result.
2. **send** them in small chunks through the configured mailer, paced to
   ``mail.rate_per_second``; suppressions are checked again right before (an unsubscribe
   that arrived after approval is honoured).
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
in a pre-serialized template (see :class:`PreparedDigest`) — no re-rendering, no email
package objects per recipient.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import functools
import html
import logging
import os
import queue
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from newsexchange.config import Config
from newsexchange.db import Contact, Database, Delivery, Digest
from newsexchange.delivery.outbox import enqueue_deliveries, sender_domain, suppressed_addresses
from newsexchange.delivery.tokens import suppress, unsubscribe_links
from newsexchange.digest.sendable import included_count, refusal
from newsexchange.errors import DeliveryError, DigestNotFound
from newsexchange.mail import Mailer, OutgoingMessage, SendResult, get_mailer
from newsexchange.mail.headers import header_text, mailbox

log = logging.getLogger(__name__)

UNSUBSCRIBE_MARKER = "%%UNSUBSCRIBE_URL%%"  # the digest renderer's per-recipient marker
SENDABLE = ("approved", "sending")
CLAIM_BATCH = 500
# Messages handed to the mailer at once, per SMTP connection. Each accepted message is
# recorded on its own (see _Marker), so this only sets how often the database is read and
# how bursty pacing is — not how much could be resent after a crash.
CHUNK_PER_CONNECTION = 50
LEASE = timedelta(minutes=10)
MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(minutes=2)
BACKOFF_MAX = timedelta(hours=6)

Progress = Callable[[int, int], None]  # (done, total)


class SendStopped(Exception):
    """Raised by a ``progress`` callback to end a send between two chunks: ``run_send`` then
    hands back what it claimed and returns its report with ``stopped`` set (the console's
    SIGTERM; the service raises its own StopRequested, which propagates)."""


# Placeholders in the pre-serialized template: ASCII, no spaces, so no header folding or
# quoted-printable encoding can split them.
_TO = "nx-recipient-placeholder@nx.invalid"
_MSGID = "<nx-message-id-placeholder@nx.invalid>"
_LISTUNSUB = "nx-list-unsubscribe-placeholder"
_BODY = "nx-body-placeholder-{}"


# -- the report ----------------------------------------------------------------------------


@dataclass
class SendReport:
    sent: int = 0
    skipped_suppressed: int = 0
    failed_permanent: int = 0
    failed_retrying: int = 0
    pending: int = 0  # still to do after this run (not yet due, or claimed by another sender)
    digests: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)  # first 50
    error: str | None = None  # the backend became unusable (bad key, server gone)
    elapsed: float = 0.0
    stopped: str | None = None  # why the send ended early on request (SendStopped)
    handed_back: int = 0  # deliveries claimed by this run and given back unsent on a stop

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed_permanent and not self.failed_retrying

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "sent": self.sent,
            "skipped_suppressed": self.skipped_suppressed,
            "failed_permanent": self.failed_permanent,
            "failed_retrying": self.failed_retrying,
            "pending": self.pending,
            "digests": self.digests,
            "failures": self.failures,
            "error": self.error,
            "seconds": round(self.elapsed, 3),
            "stopped": self.stopped,
            "handed_back": self.handed_back,
        }

    def to_text(self) -> str:
        lines = []
        for d in self.digests:
            lines.append(f"digest {d['id']} ({d['exchange']}): {d['state']}")
        lines.append(
            f"sent {self.sent}, skipped (suppressed) {self.skipped_suppressed}, "
            f"failed {self.failed_permanent}, retrying later {self.failed_retrying}, "
            f"pending {self.pending}  ({self.elapsed:.1f}s)"
        )
        for f in self.failures[:10]:
            lines.append(f"  {f['email']}: {f['error']}")
        if self.error:
            lines.append(f"stopped: {self.error}")
        if self.stopped:
            lines.append(
                f"stopped on request ({self.stopped}): sent {self.sent}, handed back "
                f"{self.handed_back} claimed deliveries; run it again to send the rest"
            )
        return "\n".join(lines)

    def _fail(self, d: Delivery, error: str) -> None:
        if len(self.failures) < 50:
            self.failures.append({"delivery_id": d.id, "email": d.email, "error": error})


# -- personalization -------------------------------------------------------------------------


class _Body:
    """One body part with the unsubscribe marker, encoded so that per recipient only the
    tail after the first marker is encoded again.

    Both transfer encodings are local: quoted-printable line by line, base64 in 57-byte
    groups (one 76-character line each). So the text up to the last line break (QP) or
    57-byte boundary (base64) before the first marker is encoded once, and each recipient
    costs the encoding of the footer only. The encoding is the shorter of the two for this
    body, as the email package chooses: mostly ASCII (an English digest, inlined CSS) stays
    readable quoted-printable; Cyrillic, which QP triples, goes base64.
    """

    def __init__(self, content: str, *, is_html: bool) -> None:
        text = content.replace("\r\n", "\n").replace("\n", "\r\n")
        self.is_html = is_html
        qp_len = len(binascii.b2a_qp(text.encode("utf-8"), istext=True))
        b64_len = (len(text.encode("utf-8")) + 2) // 3 * 4 * 78 // 76
        self.cte = "quoted-printable" if qp_len <= b64_len else "base64"
        first = text.find(UNSUBSCRIBE_MARKER)
        if first < 0:
            first = len(text)
        raw = text.encode("utf-8")
        if self.cte == "quoted-printable":
            cut = len(text[: text.rfind("\n", 0, first) + 1].encode("utf-8"))
        else:
            # May fall inside a multi-byte character: fine, base64 works on bytes.
            cut = len(text[:first].encode("utf-8")) // 57 * 57
        self.head = self._encode(raw[:cut])
        self.pieces = raw[cut:].split(UNSUBSCRIBE_MARKER.encode())

    def _encode(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self.cte == "quoted-printable":
            return binascii.b2a_qp(data, istext=True)
        return base64.encodebytes(data).replace(b"\n", b"\r\n")

    def render(self, url: str) -> bytes:
        value = (html.escape(url, quote=True) if self.is_html else url).encode("utf-8")
        tail = self._encode(value.join(self.pieces))
        if self.cte == "quoted-printable" and not tail.endswith(b"\r\n"):
            tail += b"\r\n"
        return self.head + tail


class PreparedDigest:
    """One digest rendered for one language and list, serialized once, personalized by
    substitution.

    ``to_email`` builds the message once with placeholders for To, Message-ID and
    List-Unsubscribe, and each body part replaced by a placeholder; the result is
    serialized to bytes (CRLF, RFC 2047 headers) once. Per recipient: the unsubscribe URL
    goes into each body (the HTML gets it escaped), the body is encoded (quoted-printable
    or base64, whichever the template showed to be shorter; C-speed binascii), and four
    ``bytes.replace`` calls finish the message.
    """

    def __init__(
        self,
        config: Config,
        template: EmailMessage,
        *,
        list_id: str,
        categories: list[str],
    ) -> None:
        self.config = config
        self.list_id = list_id
        self.categories = categories
        self.template = template  # kept intact (with markers) for providers like SendGrid
        skeleton = copy.deepcopy(template)
        self.parts: list[tuple[bytes, _Body]] = []
        for i, part in enumerate(p for p in skeleton.walk() if not p.is_multipart()):
            placeholder = _BODY.format(i)
            body = _Body(part.get_content(), is_html=part.get_content_subtype() == "html")
            self.parts.append((placeholder.encode(), body))
            part.set_payload(placeholder)  # already "encoded": written as-is
            del part["Content-Transfer-Encoding"]
            part["Content-Transfer-Encoding"] = body.cte
        self.raw = skeleton.as_bytes(policy=template.policy.clone(linesep="\r\n"))
        for needle in (_TO, _MSGID, _LISTUNSUB):
            if needle.encode() not in self.raw:  # pragma: no cover - guards a renderer change
                raise DeliveryError(f"digest template lost its {needle} placeholder")

    def list_unsubscribe(self, email: str) -> tuple[str, str, str]:
        url, mailto = unsubscribe_links(self.config, email, self.list_id)
        return url, mailto, f"<{url}>, <{mailto}>"

    def personalize(self, d: Delivery, name: str | None, *, raw: bool = True) -> OutgoingMessage:
        url, mailto, header = self.list_unsubscribe(d.email)
        name = header_text(name)  # a stored name may predate cleaning at import
        out = OutgoingMessage(
            message=self.template,
            recipient=d.email,
            delivery_id=d.id,
            categories=self.categories,
            message_id=d.message_id,
            recipient_name=name or None,
            substitutions={UNSUBSCRIBE_MARKER: url},
            headers={"List-Unsubscribe": header},
        )
        if raw:
            data = self.raw
            for placeholder, body in self.parts:
                data = data.replace(placeholder, body.render(url), 1)
            to = _to_header(name, d.email)
            data = data.replace(_TO.encode(), to.encode("ascii"), 1)
            data = data.replace(_MSGID.encode(), d.message_id.encode("ascii"), 1)
            # Folded after the comma (RFC 5322 §2.2.3) so the line stays readable.
            folded = f"<{url}>,\r\n <{mailto}>"
            data = data.replace(_LISTUNSUB.encode(), folded.encode("ascii"), 1)
            out.raw = data
        return out


# atext and spaces only: a '.' is not atext and needs quoting (policy.default fails on it).
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9 '-]+$")


def _to_header(name: str | None, addr: str) -> str:
    """``Name <addr>``, the name as one RFC 2047 encoded-word when it is not plain ASCII
    (:func:`newsexchange.mail.headers.mailbox`: never split, so every decoder reads the name
    back as it was). The name is cleaned first (:func:`header_text`): these bytes go into
    the message as they are, so a CR/LF in a name would start a header of its own."""
    name = header_text(name)
    if not name:
        return addr
    if _PLAIN_NAME.match(name):
        return f"{name} <{addr}>"
    return mailbox(name, addr)


def list_headers(config: Config, list_id: str) -> dict[str, str]:
    """The headers every digest copy of a list carries (RFC 2369, 2919, 3834, 8058)."""
    settings = config.lists.get(list_id)
    name = header_text((settings.name_in(settings.language) if settings else None) or list_id)
    domain = sender_domain(config)
    return {
        "List-Id": f"{name} <{header_text(list_id)}.{domain}>",
        "List-Unsubscribe": _LISTUNSUB,
        # RFC 8058: the https URL above accepts a POST with this body, without login.
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Precedence": "bulk",  # RFC 3834 §3.1.8 readers: no vacation auto-replies
        "Auto-Submitted": "auto-generated",
        "X-Auto-Response-Suppress": "OOF, AutoReply",  # the same, for Exchange
    }


class Renderer:
    """Renders each (digest, list) once per run and keeps the prepared template."""

    def __init__(self, config: Config, *, now: datetime) -> None:
        self.config = config
        self.now = now
        self.cache: dict[tuple[int, str, str], PreparedDigest] = {}

    def get(self, session: Session, digest: Digest, list_id: str, language: str) -> PreparedDigest:
        key = (digest.id, list_id, language)
        prepared = self.cache.get(key)
        if prepared is None:
            from newsexchange.digest.render import render_digest, to_email

            rendered = render_digest(session, self.config, digest)
            template = to_email(
                rendered,
                config=self.config,
                to=_TO,
                extra_headers=list_headers(self.config, list_id),
                now=self.now,
                message_id=_MSGID,
            )
            prepared = PreparedDigest(
                self.config,
                template,
                list_id=list_id,
                categories=["newsexchange", digest.exchange_id, f"digest-{digest.id}"],
            )
            self.cache[key] = prepared
        return prepared


# -- claiming ---------------------------------------------------------------------------------


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _claimer_is_dead(claimed_by: str | None) -> bool:
    """True when the claim was made on this host by a process that no longer exists (a
    crash or ``kill -9``): its rows can be taken at once instead of after the lease."""
    if not claimed_by:
        return True
    host, _, rest = claimed_by.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(
    session: Session,
    digest_id: int,
    *,
    worker: str,
    now: datetime,
    limit: int = CLAIM_BATCH,
    lease: timedelta = LEASE,
) -> list[Delivery]:
    """Take up to ``limit`` due deliveries of a digest for ``worker`` (caller commits)."""
    due = and_(
        Delivery.status.in_(("pending", "retrying")),
        or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
    )
    stale = and_(Delivery.status == "claimed", Delivery.claimed_at < now - lease)
    # Claims by dead local processes, found first (cheap: one small query per batch).
    orphan_ids = [
        did
        for did, by in session.execute(
            select(Delivery.id, Delivery.claimed_by).where(
                Delivery.digest_id == digest_id,
                Delivery.status == "claimed",
                Delivery.claimed_by != worker,
            )
        )
        if _claimer_is_dead(by)
    ]
    cond = or_(due, stale, Delivery.id.in_(orphan_ids)) if orphan_ids else or_(due, stale)
    stmt = (
        select(Delivery)
        .where(Delivery.digest_id == digest_id, cond)
        .order_by(Delivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    rows = list(session.scalars(stmt))
    for d in rows:
        d.status = "claimed"
        d.claimed_at = now
        d.claimed_by = worker
        d.attempts += 1
    session.flush()
    return rows


def _backoff(attempts: int, retry_after: float | None) -> timedelta:
    delay: timedelta = min(BACKOFF_BASE * (1 << min(max(attempts - 1, 0), 20)), BACKOFF_MAX)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def apply_result(
    session: Session, d: Delivery, result: SendResult, *, now: datetime, report: SendReport
) -> None:
    """Record one outcome on its delivery row (and suppress a bounced address)."""
    d.claimed_by = None
    d.claimed_at = None
    if result.ok:
        d.status = "sent"
        d.sent_at = now
        d.provider_message_id = result.provider_message_id
        d.last_error = None
        d.next_attempt_at = None
        report.sent += 1
        return
    d.last_error = (result.error or "failed")[:2000]
    if result.permanent or d.attempts >= MAX_ATTEMPTS:
        d.status = "failed"
        d.next_attempt_at = None
        if not result.permanent:
            d.last_error = f"gave up after {d.attempts} attempts: {d.last_error}"
        if result.bounce:
            suppress(session, d.email, list_id=None, reason="bounced", now=now, detail=d.last_error)
        report.failed_permanent += 1
        report._fail(d, d.last_error)
    else:
        d.status = "retrying"
        d.next_attempt_at = now + _backoff(d.attempts, result.retry_after)
        report.failed_retrying += 1
        report._fail(d, d.last_error)


# -- the step ---------------------------------------------------------------------------------


class _Pacer:
    """Keeps the average rate at or under ``rate`` messages per second."""

    def __init__(self, rate: float, clock: Callable[[], float], sleep: Callable[[float], None]):
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self.start = clock()
        self.count = 0

    def wait(self, n: int) -> None:
        due = self.start + self.count / self.rate
        ahead = due - self.clock()
        if ahead > 0:
            self.sleep(ahead)
        self.count += n


def _too_few(config: Config, d: Digest) -> str | None:
    """Why this digest may not be sent for having too few items (digest/sendable.py): counted
    in the frozen content that would be mailed, else in its entries."""
    items = (d.frozen or {}).get("items") if isinstance(d.frozen, dict) else None
    if isinstance(items, list):
        count = len(items)
    else:
        count = included_count((e.included, e.dropped) for e in d.entries)
    return refusal(count, config.exchange(d.exchange_id), d.id)


def _digests(session: Session, config: Config, digest_id: int | None) -> list[Digest]:
    if digest_id is not None:
        d = session.get(Digest, digest_id)
        if d is None:
            raise DigestNotFound(digest_id)
        if d.state not in (*SENDABLE, "sent"):
            raise DeliveryError(
                f"digest {digest_id} is {d.state}; only an approved digest can be sent "
                "(approve it first: newsexchange approve ID)"
            )
        why = _too_few(config, d) if d.state != "sent" else None
        if why is not None:
            raise DeliveryError(why)
        return [d]
    out = []
    for d in session.scalars(select(Digest).where(Digest.state.in_(SENDABLE)).order_by(Digest.id)):
        why = _too_few(config, d)
        if why is not None:
            log.warning("digest not sent", extra={"digest": d.id, "reason": why})
            continue
        out.append(d)
    return out


def _remaining(session: Session, digest_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.digest_id == digest_id,
                Delivery.status.in_(("pending", "retrying", "claimed")),
            )
        )
        or 0
    )


def run_send(
    db: Database,
    config: Config,
    *,
    now: datetime,
    digest_id: int | None = None,
    progress: Progress | None = None,
    mailer: Mailer | None = None,
    worker: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """Deliver every due delivery of approved digests (or of one digest). Safe to run again
    and concurrently: each row is sent by whoever claimed it."""
    started = clock()
    report = SendReport()
    worker = worker or worker_id()
    own_mailer = mailer is None
    with db.session() as s:
        digests = [(d.id, d.exchange_id) for d in _digests(s, config, digest_id)]
    if not digests:
        report.elapsed = clock() - started
        return report
    if not config.public_url.startswith("https://"):
        # RFC 8058 §3.1: the one-click URI must be https; mail providers ignore an http one
        # (and Gmail/Yahoo's bulk-sender rules then count the list as non-compliant).
        log.warning(
            "public_url is not https: one-click unsubscribe will not be offered by mail clients",
            extra={"public_url": config.public_url},
        )
    mailer = mailer or get_mailer(config)
    rate = config.mail.rate_per_second
    connections = config.mail.smtp.connections
    # At most about one second's worth per chunk, so pacing never bursts beyond that.
    chunk_size = max(connections, min(CHUNK_PER_CONNECTION * connections, int(rate)))
    if mailer.personalizes:
        chunk_size = 1000  # one provider request per chunk
    pacer = _Pacer(rate, clock, sleep)
    renderer = Renderer(config, now=now)  # each digest rendered once per run, not per chunk
    try:
        for did, exchange_id in digests:
            with db.session() as s:
                digest = s.get(Digest, did)
                assert digest is not None
                if digest.state == "approved":
                    # Anyone added to the lists between approval and now is included; the
                    # outbox is idempotent so nothing is doubled.
                    enqueue_deliveries(s, config, digest, now=now)
                    digest.state = "sending"
                total = _remaining(s, did)
            done = 0
            if progress:
                progress(0, total)
            while report.error is None:
                with db.session() as s:
                    claimed = claim(
                        s, did, worker=worker, now=now, limit=max(CLAIM_BATCH, chunk_size)
                    )
                    claimed_ids = [d.id for d in claimed]
                if not claimed_ids:
                    break
                # While one chunk is on the wire (a thread: the mailer mostly waits on
                # sockets), the next is loaded and personalized here.
                in_flight: _Thread | None = None
                in_flight_size = 0
                for i in range(0, len(claimed_ids), chunk_size):
                    ids = claimed_ids[i : i + chunk_size]
                    sending, outgoing = _prepare_chunk(
                        db, mailer, did, ids, report=report, renderer=renderer
                    )
                    if in_flight is not None:
                        in_flight.join()
                        done += in_flight_size
                        if progress:
                            progress(done, total)
                    if report.error is not None:
                        _release(db, [d.id for d in sending], now=now, error=report.error)
                        continue
                    in_flight = _Thread(
                        _dispatch,
                        db,
                        mailer,
                        sending,
                        outgoing,
                        now=now,
                        report=report,
                        pacer=pacer,
                    )
                    in_flight_size = len(ids)
                    in_flight.start()
                if in_flight is not None:
                    in_flight.join()
                    done += in_flight_size
                    if progress:
                        progress(done, total)
            with db.session() as s:
                digest = s.get(Digest, did)
                assert digest is not None
                left = _remaining(s, did)
                report.pending += left
                if left == 0 and digest.state in SENDABLE:
                    digest.state = "sent"
                    digest.sent_at = now
                report.digests.append(
                    {"id": did, "exchange": exchange_id, "state": digest.state, "remaining": left}
                )
    except SendStopped as exc:
        # Asked to stop between two chunks (SIGTERM to `newsexchange send`): every accepted
        # message is recorded, and what this worker claimed but did not send goes back now.
        report.stopped = str(exc) or "stop requested"
        report.handed_back = _release_own(db, worker)
        with db.session() as s:
            report.pending = sum(_remaining(s, did) for did, _ex in digests)
    except BaseException:
        # Stopped (SIGTERM in the service, Ctrl-C at the console) or failed: what this
        # worker claimed but did not send goes back at once, not after the lease.
        _release_own(db, worker)
        raise
    finally:
        if own_mailer:
            mailer.close()
    report.elapsed = clock() - started
    log.info(
        "send finished",
        extra={k: v for k, v in report.to_json().items() if k not in ("failures", "digests")},
    )
    return report


class _Thread(threading.Thread):
    """A thread whose exception is raised again by ``join()`` in the caller, so a database
    error while recording results is not lost in the background."""

    def __init__(self, target: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self._call = (target, args, kwargs)
        self._error: BaseException | None = None

    def run(self) -> None:
        target, args, kwargs = self._call
        try:
            target(*args, **kwargs)
        except BaseException as exc:
            self._error = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self._error is not None:
            raise self._error


def _release_own(db: Database, worker: str) -> int:
    """Give back every row ``worker`` still has claimed; returns how many (0 if it could not:
    the lease or the dead-claimer check frees them later)."""
    try:
        with db.session() as s:
            rows = list(
                s.scalars(
                    select(Delivery).where(
                        Delivery.claimed_by == worker, Delivery.status == "claimed"
                    )
                )
            )
            for d in rows:
                d.status = "retrying" if d.attempts > 1 else "pending"
                d.attempts = max(d.attempts - 1, 0)
                d.claimed_by = None
                d.claimed_at = None
    except Exception:
        return 0
    return len(rows)


def _release(db: Database, ids: Sequence[int], *, now: datetime, error: str) -> None:
    """Give claimed rows back (not sent) so the next run takes them."""
    with db.session() as s:
        for d in s.scalars(select(Delivery).where(Delivery.id.in_(ids))):
            if d.status == "claimed":
                d.status = "retrying"
                d.attempts = max(d.attempts - 1, 0)
                d.claimed_by = None
                d.claimed_at = None
                d.next_attempt_at = now + BACKOFF_BASE
                d.last_error = error[:2000]


def _prepare_chunk(
    db: Database,
    mailer: Mailer,
    digest_id: int,
    ids: Sequence[int],
    *,
    report: SendReport,
    renderer: Renderer,
) -> tuple[list[Delivery], list[OutgoingMessage]]:
    """Load a chunk, drop (and mark) suppressed rows, personalize the rest.

    The database is held only to read and to mark suppressed rows; personalizing happens
    outside any transaction (on SQLite every transaction takes the write lock, and the
    mailer's threads need it to record each accepted message)."""
    raw = not mailer.personalizes
    with db.session() as s:
        digest = s.get(Digest, digest_id)
        assert digest is not None
        rows = list(s.scalars(select(Delivery).where(Delivery.id.in_(ids)).order_by(Delivery.id)))
        contact_ids = [d.contact_id for d in rows if d.contact_id]
        names: dict[int, str] = {
            cid: name
            for cid, name in s.execute(
                select(Contact.id, Contact.name).where(Contact.id.in_(contact_ids))
            )
        }
        by_list: dict[str, list[Delivery]] = {}
        for d in rows:
            by_list.setdefault(d.list_id, []).append(d)
        todo: list[tuple[PreparedDigest, Delivery]] = []
        for list_id, group in by_list.items():
            blocked = suppressed_addresses(s, [d.email for d in group], list_id)
            for d in group:
                if d.email.lower() in blocked:
                    d.status = "suppressed"
                    d.claimed_by = None
                    d.claimed_at = None
                    report.skipped_suppressed += 1
                    continue
                todo.append((renderer.get(s, digest, list_id, d.language), d))
    outgoing = [
        prepared.personalize(d, names.get(d.contact_id or -1), raw=raw) for prepared, d in todo
    ]
    return [d for _p, d in todo], outgoing


def _dispatch(
    db: Database,
    mailer: Mailer,
    sending: list[Delivery],
    outgoing: list[OutgoingMessage],
    *,
    now: datetime,
    report: SendReport,
    pacer: _Pacer,
) -> None:
    """Pace, send one prepared chunk, record every outcome."""
    if not outgoing:
        return
    pacer.wait(len(outgoing))
    marker = _Marker(db, now)
    try:
        _send_and_record(db, mailer, sending, outgoing, now=now, report=report, marker=marker)
    finally:
        marker.close()


def _send_and_record(
    db: Database,
    mailer: Mailer,
    sending: list[Delivery],
    outgoing: list[OutgoingMessage],
    *,
    now: datetime,
    report: SendReport,
    marker: _Marker,
) -> None:
    def on_sent(index: int, result: SendResult) -> Callable[[], object] | None:
        # Called by the backend the moment the server said "250": recorded at once (group
        # commit, see _Marker), so a crash now cannot make us send it again. With the
        # wait returned, the unavoidable window is one message per connection.
        if result.ok:
            return marker.mark(sending[index].id, result.provider_message_id)
        return None

    try:
        results = mailer.send(outgoing, on_sent=on_sent)  # ignored unless reports_each
    except DeliveryError as exc:
        marker.close()
        report.error = str(exc)
        marked = marker.marked
        report.sent += len(marked)  # accepted before the backend failed: sent, and said so
        _release(db, [d.id for d in sending if d.id not in marked], now=now, error=str(exc))
        return
    marker.close()  # every accepted message is committed before the rest is recorded
    marked = marker.marked
    with db.session() as s:
        pending_ids = [d.id for d in sending if d.id not in marked]
        fresh = {d.id: d for d in s.scalars(select(Delivery).where(Delivery.id.in_(pending_ids)))}
        for d, result in zip(sending, results, strict=True):
            if d.id in marked:
                report.sent += 1
            else:
                apply_result(s, fresh[d.id], result, now=now, report=report)


class _Marker:
    """Records accepted messages as ``sent`` as they come in, from a thread of its own.

    The mailer's threads only queue (delivery id, provider id) and go on to the next
    message; this thread commits whatever has queued up in one short transaction (a group
    commit), usually one to a few rows, within a millisecond or so of the server's "250".
    That gap is the whole of the unavoidable window, and it costs the SMTP connections
    nothing.
    """

    _stmt = (
        update(Delivery)
        .where(Delivery.id == bindparam("did"), Delivery.status == "claimed")
        .values(
            status="sent",
            sent_at=bindparam("now"),
            provider_message_id=bindparam("pid"),
            claimed_by=None,
            claimed_at=None,
            last_error=None,
            next_attempt_at=None,
        )
    )

    def __init__(self, db: Database, now: datetime) -> None:
        self.engine = db.engine
        self.now = now
        self.queue: queue.SimpleQueue[tuple[int, str | None, threading.Event] | None] = (
            queue.SimpleQueue()
        )
        self.marked: set[int] = set()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def mark(self, delivery_id: int, provider_id: str | None) -> Callable[[], object]:
        """Queue a row to mark; returns a wait for its commit (see smtp.OnSent)."""
        done = threading.Event()
        self.queue.put((delivery_id, provider_id, done))
        return functools.partial(done.wait, 30.0)

    def _run(self) -> None:
        with self.engine.connect() as conn:
            stop = False
            while not stop:
                item = self.queue.get()
                batch: list[tuple[int, str | None, threading.Event]] = []
                while item is not None:
                    batch.append(item)
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
                else:
                    stop = True
                if not batch:
                    continue
                try:
                    conn.execute(
                        self._stmt,
                        [{"did": d, "now": self.now, "pid": p} for d, p, _e in batch],
                    )
                    conn.commit()
                    self.marked.update(d for d, _p, _e in batch)
                except Exception as exc:  # reported by close(); rows stay claimed
                    self.error = exc
                    conn.rollback()
                finally:
                    for _d, _p, event in batch:
                        event.set()

    def close(self) -> None:
        """Wait until everything queued is committed (idempotent)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


@contextlib.contextmanager
def send_progress(*, enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar on a terminal; nothing otherwise (cron, --json, pipes)."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.progress import (
        Progress as RichProgress,
    )

    with RichProgress(
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("send", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
