"""The outbox: one :class:`~newsexchange.db.Delivery` row per recipient of an approved digest.

The send step calls :func:`enqueue_deliveries` for an approved digest (``run_send`` and
``shards.plan_shards``, in a worker), in the transaction that moves it to ``sending``, so
"sending" and "every recipient has a pending delivery" become true together or not at all.
Approval itself only counts the recipients (``queries.recipient_count``): queueing 100,000
rows does not belong in an editor's web request (issue 13). The row is the
unit of exactly-once: the sender claims it (:func:`claim`), sends, and marks it sent, or
records what became of it (:func:`apply_result`, the next state decided by
:func:`.outcome.next_state`), or gives it back unsent (:func:`release`, :func:`release_own`).

Recipients are the contacts of every list the exchange names, minus suppressed addresses
(unsubscribed, bounced, complained, globally or for that list). A contact on two lists of the
same exchange gets one delivery (the unique ``(digest_id, email)``), attributed to the first
list in the exchange's order.

Each delivery gets a Message-ID made once and kept: ``<nx.{digest}.{uid}@{domain of From}>``.
A resend after a crash carries the same Message-ID, which is what lets receiving servers,
mail clients and our own dedupers recognise it as the same message.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr

from newsexchange.config import Config
from newsexchange.db import Database, Delivery, Digest, Session
from newsexchange.db.queries import deliveries as queries
from newsexchange.db.queries import lists as list_queries
from newsexchange.delivery.outcome import BACKOFF_BASE, claim_is_orphaned, next_state
from newsexchange.delivery.report import SendReport
from newsexchange.delivery.unsubscribe import HASH_PREFIX, email_hash, suppress
from newsexchange.mail import SendResult

__all__ = [
    "CLAIM_BATCH",
    "CLAIM_TTL",
    "Recipient",
    "apply_result",
    "claim",
    "enqueue_deliveries",
    "new_message_id",
    "recipient_count",
    "recipients_for",
    "release",
    "release_own",
    "sender_domain",
    "suppressed_addresses",
]

CLAIM_BATCH = 500
#: How long a claim holds without renewal when the caller names no TTL (the send step passes
#: ``mail.claim_ttl_seconds``). A live sender renews its claims every third of it.
CLAIM_TTL = timedelta(seconds=30)


@dataclass(frozen=True)
class Recipient:
    """One address a digest goes to, and the list it came through."""

    contact_id: int
    email: str
    list_id: str
    language: str


def sender_domain(config: Config) -> str:
    """The domain of ``mail.from``: Message-IDs are minted under it (RFC 5322 §3.6.4 asks for
    a right-hand side the sender controls, so ours are unique across senders)."""
    _name, addr = parseaddr(config.mail.from_)
    return addr.rsplit("@", 1)[-1].lower() if "@" in addr else "newsexchange.invalid"


def new_message_id(config: Config, digest_id: int) -> str:
    """A fresh Message-ID for one delivery (stored on the row; never regenerated)."""
    return f"<nx.{digest_id}.{secrets.token_hex(10)}@{sender_domain(config)}>"


def suppressed_addresses(
    session: Session, emails: Iterable[str], list_id: str | None = None
) -> set[str]:
    """Which of ``emails`` must not be mailed on ``list_id`` (global suppressions always count).

    An erased address is suppressed by its hash (see ``unsubscribe.email_hash``), so both forms
    are looked up. Queried in chunks so a 10,000-address list is not one giant IN (...).
    """
    wanted = sorted({e.lower() for e in emails})
    out: set[str] = set()
    for i in range(0, len(wanted), 250):
        chunk = wanted[i : i + 250]
        by_key = {e: e for e in chunk} | {email_hash(e): e for e in chunk}
        rows = list_queries.blocked_emails(session, list(by_key), list_id)
        out.update(by_key[e] for e in rows if e in by_key)
    return out


class _Blocked:
    """Every suppression that can block a digest's recipients, loaded in one query: set-based
    instead of a lookup per 250 addresses (400 queries for a 100,000-contact list)."""

    def __init__(self, session: Session, list_ids: Sequence[str]) -> None:
        self.by_list: dict[str | None, set[str]] = {}
        for key, lid in queries.suppressions_for_lists(session, list_ids):
            self.by_list.setdefault(lid, set()).add(key)
        # Hashing every address only matters when some suppression is kept as a hash.
        self.hashed = any(k.startswith(HASH_PREFIX) for ks in self.by_list.values() for k in ks)

    def __call__(self, email: str, list_id: str) -> bool:
        keys = self.by_list.get(None, set()) | self.by_list.get(list_id, set())
        if not keys:
            return False
        key = email.lower()
        return key in keys or (self.hashed and email_hash(key) in keys)


def recipients_for(session: Session, config: Config, digest: Digest) -> list[Recipient]:
    """The active, non-suppressed recipients of a digest, one per address, in a stable order
    (the exchange's lists in order, each by contact id). Two queries whatever the size."""
    exchange = config.exchange(digest.exchange_id)
    lists = list(exchange.lists)
    members: dict[str, list[tuple[int, str]]] = {lid: [] for lid in lists}
    for cid, email, lid in queries.members_of_lists(session, lists):
        members[lid].append((cid, email))
    blocked = _Blocked(session, lists)
    seen: set[str] = set()
    out: list[Recipient] = []
    for list_id in lists:
        list_language = config.lists[list_id].language if list_id in config.lists else None
        # The digest is written in one language (the exchange's, which config checks
        # equals each list's); the row keeps it so rendering happens once per language.
        language = digest.language or list_language or exchange.language
        for cid, email in members[list_id]:
            key = email.lower()
            if key in seen or blocked(email, list_id):
                continue
            seen.add(key)
            out.append(Recipient(cid, email, list_id, language))
    return out


def recipient_count(session: Session, config: Config, digest: Digest) -> int:
    """How many recipients the digest will be mailed to, counted with one query (what the
    approval page says; :func:`enqueue_deliveries` makes the rows later, in a worker)."""
    return queries.recipient_count(session, list(config.exchange(digest.exchange_id).lists))


def enqueue_deliveries(session: Session, config: Config, digest: Digest, *, now: datetime) -> int:
    """Create one pending Delivery per recipient of ``digest``; return how many were new.

    Idempotent: calling it again (a retried plan, a list grown since) adds only the
    missing recipients; existing rows, whatever their state, are left alone. Runs in the
    caller's transaction and does not commit. Set-based: the recipients in two queries,
    the rows in one executemany (a 100,000-contact list in seconds).
    """
    if digest.id is None:
        session.flush()
    recipients = recipients_for(session, config, digest)
    if not recipients:
        return 0
    existing = queries.emails_of_digest(session, digest.id)
    domain = sender_domain(config)
    rows = [
        {
            "digest_id": digest.id,
            "contact_id": r.contact_id,
            "email": r.email,
            "list_id": r.list_id,
            "language": r.language,
            "status": "pending",
            # Minted once per delivery, as new_message_id does (the domain looked up once).
            "message_id": f"<nx.{digest.id}.{secrets.token_hex(10)}@{domain}>",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for r in recipients
        if r.email.lower() not in existing
    ]
    if not rows:
        return 0
    queries.insert_new(session, rows)
    # Counted, not taken from rowcount: executemany rowcounts differ between drivers.
    return queries.count_for_digest(session, digest.id) - len(existing)


# -- claiming and recording -----------------------------------------------------------------


def claim(
    session: Session,
    digest_id: int,
    *,
    worker: str,
    now: datetime,
    limit: int = CLAIM_BATCH,
    lease: timedelta = CLAIM_TTL,
    id_range: tuple[int, int] | None = None,
) -> list[Delivery]:
    """Take up to ``limit`` due deliveries of a digest for ``worker`` (caller commits).
    ``lease`` is the claim TTL: others' claims not renewed for that long are taken."""
    # Claims by dead local processes, found first (cheap: one small query per batch).
    orphans = [
        did
        for did, by in queries.claimed_by_others(session, digest_id, worker)
        if claim_is_orphaned(by)
    ]
    rows = queries.claimable(
        session,
        digest_id,
        now=now,
        stale_before=now - lease,
        also=[o for o in orphans if id_range is None or id_range[0] <= o <= id_range[1]],
        limit=limit,
        id_range=id_range,
    )
    for d in rows:
        d.status = "claimed"
        d.claimed_at = now
        d.claimed_by = worker
        d.attempts += 1
    session.flush()
    return rows


def apply_result(
    session: Session, d: Delivery, result: SendResult, *, now: datetime, report: SendReport
) -> None:
    """Record one outcome on its delivery row (and suppress a bounced address)."""
    outcome = next_state(result, attempts=d.attempts, now=now)
    d.claimed_by = None
    d.claimed_at = None
    d.status = outcome.status
    d.last_error = outcome.last_error
    d.next_attempt_at = outcome.next_attempt_at
    if result.ok:
        d.sent_at = now
        d.provider_message_id = result.provider_message_id
        report.sent += 1
        return
    error = outcome.last_error or ""
    if outcome.suppress:
        suppress(session, d.email, list_id=None, reason="bounced", now=now, detail=error)
    if outcome.status == "failed":
        report.failed_permanent += 1
    else:
        report.failed_retrying += 1
    report._fail(d, error)


def release_own(db: Database, worker: str) -> int:
    """Give back every row ``worker`` still has claimed; returns how many (0 if it could not:
    the lease or the dead-claimer check frees them later)."""
    try:
        with db.session() as s:
            rows = queries.claimed_by(s, worker)
            for d in rows:
                d.status = "retrying" if d.attempts > 1 else "pending"
                d.attempts = max(d.attempts - 1, 0)
                d.claimed_by = None
                d.claimed_at = None
    except Exception:
        return 0
    return len(rows)


def release(db: Database, ids: Sequence[int], *, now: datetime, error: str) -> None:
    """Give claimed rows back (not sent) so the next run takes them."""
    with db.session() as s:
        for d in queries.by_ids(s, ids):
            if d.status == "claimed":
                d.status = "retrying"
                d.attempts = max(d.attempts - 1, 0)
                d.claimed_by = None
                d.claimed_at = None
                d.next_attempt_at = now + BACKOFF_BASE
                d.last_error = error[:2000]
