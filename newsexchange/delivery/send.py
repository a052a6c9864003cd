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

import binascii
import contextlib
import copy
import html
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from newsexchange.config import Config
from newsexchange.db import Contact, Database, Delivery, Digest
from newsexchange.delivery.mailers import Mailer, OutgoingMessage, SendResult, get_mailer
from newsexchange.delivery.outbox import enqueue_deliveries, sender_domain, suppressed_addresses
from newsexchange.delivery.tokens import suppress, unsubscribe_mailto, unsubscribe_url
from newsexchange.errors import DeliveryError

log = logging.getLogger(__name__)

UNSUBSCRIBE_MARKER = "%%UNSUBSCRIBE_URL%%"  # the digest renderer's per-recipient marker
SENDABLE = ("approved", "sending")
CLAIM_BATCH = 500
CHUNK_PER_CONNECTION = 8
LEASE = timedelta(minutes=10)
MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(minutes=2)
BACKOFF_MAX = timedelta(hours=6)

Progress = Callable[[int, int], None]  # (done, total)

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
        return "\n".join(lines)

    def _fail(self, d: Delivery, error: str) -> None:
        if len(self.failures) < 50:
            self.failures.append({"delivery_id": d.id, "email": d.email, "error": error})


# -- personalization -------------------------------------------------------------------------


def _qp(text: str) -> bytes:
    """Quoted-printable body, CRLF line ends (binascii: C speed, RFC 2045 76-char lines)."""
    data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    return binascii.b2a_qp(data, istext=True)


class PreparedDigest:
    """One digest rendered for one language and list, serialized once, personalized by
    substitution.

    ``to_email`` builds the message once with placeholders for To, Message-ID and
    List-Unsubscribe, and each body part replaced by a placeholder; the result is
    serialized to bytes (CRLF, RFC 2047 headers) once. Per recipient: the unsubscribe URL
    goes into each body (the HTML gets it escaped), the body is quoted-printable encoded
    (binascii), and four ``bytes.replace`` calls finish the message.
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
        self.parts: list[tuple[bytes, list[str], bool]] = []
        for i, part in enumerate(p for p in skeleton.walk() if not p.is_multipart()):
            content = part.get_content()
            placeholder = _BODY.format(i)
            is_html = part.get_content_subtype() == "html"
            self.parts.append((placeholder.encode(), content.split(UNSUBSCRIBE_MARKER), is_html))
            part.set_payload(placeholder)  # already "encoded": written as-is
            del part["Content-Transfer-Encoding"]
            part["Content-Transfer-Encoding"] = "quoted-printable"
        self.raw = skeleton.as_bytes(policy=template.policy.clone(linesep="\r\n"))
        for needle in (_TO, _MSGID, _LISTUNSUB):
            if needle.encode() not in self.raw:  # pragma: no cover - guards a renderer change
                raise DeliveryError(f"digest template lost its {needle} placeholder")

    def list_unsubscribe(self, email: str) -> tuple[str, str, str]:
        url = unsubscribe_url(self.config, email, self.list_id)
        mailto = unsubscribe_mailto(self.config, email, self.list_id)
        return url, mailto, f"<{url}>, <{mailto}>"

    def personalize(self, d: Delivery, name: str | None, *, raw: bool = True) -> OutgoingMessage:
        url, mailto, header = self.list_unsubscribe(d.email)
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
            for placeholder, pieces, is_html in self.parts:
                value = html.escape(url, quote=True) if is_html else url
                data = data.replace(placeholder, _qp(value.join(pieces)), 1)
            to = formataddr((name, d.email), charset="utf-8") if name else d.email
            data = data.replace(_TO.encode(), to.encode("ascii"), 1)
            data = data.replace(_MSGID.encode(), d.message_id.encode("ascii"), 1)
            # Folded after the comma (RFC 5322 §2.2.3) so the line stays readable.
            folded = f"<{url}>,\r\n <{mailto}>"
            data = data.replace(_LISTUNSUB.encode(), folded.encode("ascii"), 1)
            out.raw = data
        return out


def list_headers(config: Config, list_id: str) -> dict[str, str]:
    """The headers every digest copy of a list carries (RFC 2369, 2919, 3834, 8058)."""
    settings = config.lists.get(list_id)
    name = (settings.name if settings else None) or list_id
    domain = sender_domain(config)
    return {
        "List-Id": f"{name} <{list_id}.{domain}>",
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


def _digests(session: Session, digest_id: int | None) -> list[Digest]:
    if digest_id is not None:
        d = session.get(Digest, digest_id)
        if d is None:
            raise DeliveryError(f"no digest with id {digest_id}")
        if d.state not in (*SENDABLE, "sent"):
            raise DeliveryError(
                f"digest {digest_id} is {d.state}; only an approved digest can be sent "
                "(approve it first: newsexchange approve ID)"
            )
        return [d]
    return list(
        session.scalars(select(Digest).where(Digest.state.in_(SENDABLE)).order_by(Digest.id))
    )


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
        digests = [(d.id, d.exchange_id) for d in _digests(s, digest_id)]
    if not digests:
        report.elapsed = clock() - started
        return report
    mailer = mailer or get_mailer(config)
    chunk_size = max(1, CHUNK_PER_CONNECTION * config.mail.smtp.connections)
    if getattr(mailer, "personalizes", False):
        chunk_size = 1000  # one provider request per chunk
    pacer = _Pacer(config.mail.rate_per_second, clock, sleep)
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
                    claimed = claim(s, did, worker=worker, now=now)
                    claimed_ids = [d.id for d in claimed]
                if not claimed_ids:
                    break
                for i in range(0, len(claimed_ids), chunk_size):
                    ids = claimed_ids[i : i + chunk_size]
                    if report.error is not None:
                        _release(db, ids, now=now, error=report.error)
                        continue
                    _send_chunk(
                        db,
                        config,
                        mailer,
                        did,
                        ids,
                        now=now,
                        report=report,
                        pacer=pacer,
                        renderer=renderer,
                    )
                    done += len(ids)
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
    finally:
        if own_mailer:
            mailer.close()
    report.elapsed = clock() - started
    log.info(
        "send finished",
        extra={k: v for k, v in report.to_json().items() if k not in ("failures", "digests")},
    )
    return report


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


def _send_chunk(
    db: Database,
    config: Config,
    mailer: Mailer,
    digest_id: int,
    ids: Sequence[int],
    *,
    now: datetime,
    report: SendReport,
    pacer: _Pacer,
    renderer: Renderer,
) -> None:
    raw = not getattr(mailer, "personalizes", False)
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
        outgoing: list[OutgoingMessage] = []
        sending: list[Delivery] = []
        by_list: dict[str, list[Delivery]] = {}
        for d in rows:
            by_list.setdefault(d.list_id, []).append(d)
        for list_id, group in by_list.items():
            blocked = suppressed_addresses(s, [d.email for d in group], list_id)
            for d in group:
                if d.email.lower() in blocked:
                    d.status = "suppressed"
                    d.claimed_by = None
                    d.claimed_at = None
                    report.skipped_suppressed += 1
                    continue
                prepared = renderer.get(s, digest, list_id, d.language)
                outgoing.append(prepared.personalize(d, names.get(d.contact_id or -1), raw=raw))
                sending.append(d)
    if not outgoing:
        return
    pacer.wait(len(outgoing))
    marked: set[int] = set()
    marked_lock = threading.Lock()

    def on_sent(index: int, result: SendResult) -> None:
        # Called by the backend the moment the server said "250": record it at once, in
        # its own tiny transaction, so a crash now cannot make us send it again. This is
        # what shrinks the unavoidable window from a chunk to one message per connection.
        if not result.ok:
            return
        delivery_id = sending[index].id
        with db.engine.begin() as conn:
            conn.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.status == "claimed")
                .values(
                    status="sent",
                    sent_at=now,
                    provider_message_id=result.provider_message_id,
                    claimed_by=None,
                    claimed_at=None,
                    last_error=None,
                    next_attempt_at=None,
                )
            )
        with marked_lock:
            marked.add(delivery_id)

    try:
        if getattr(mailer, "reports_each", False):
            results = mailer.send(outgoing, on_sent=on_sent)  # type: ignore[call-arg]
        else:
            results = mailer.send(outgoing)
    except DeliveryError as exc:
        report.error = str(exc)
        _release(db, [d.id for d in sending if d.id not in marked], now=now, error=str(exc))
        return
    with db.session() as s:
        pending_ids = [d.id for d in sending if d.id not in marked]
        fresh = {d.id: d for d in s.scalars(select(Delivery).where(Delivery.id.in_(pending_ids)))}
        for d, result in zip(sending, results, strict=True):
            if d.id in marked:
                report.sent += 1
            else:
                apply_result(s, fresh[d.id], result, now=now, report=report)


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
