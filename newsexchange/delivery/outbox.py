"""The outbox: one :class:`~newsexchange.db.Delivery` row per recipient of an approved digest.

Approval calls :func:`enqueue_deliveries` inside the approving transaction, so "approved" and
"every recipient has a pending delivery" become true together or not at all. The row is the
unit of exactly-once: the sender claims it, sends, and marks it sent (see ``send.py``).

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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr

from sqlalchemy import func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from newsexchange.config import Config
from newsexchange.db import Contact, Delivery, Digest, ListMembership, Suppression
from newsexchange.delivery.tokens import email_hash


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

    An erased address is suppressed by its hash (see ``tokens.email_hash``), so both forms
    are looked up. Queried in chunks so a 10,000-address list is not one giant IN (...).
    """
    wanted = sorted({e.lower() for e in emails})
    out: set[str] = set()
    for i in range(0, len(wanted), 250):
        chunk = wanted[i : i + 250]
        by_key = {e: e for e in chunk} | {email_hash(e): e for e in chunk}
        cond: ColumnElement[bool] = Suppression.list_id.is_(None)
        if list_id is not None:
            cond = or_(cond, Suppression.list_id == list_id)
        rows = session.scalars(
            select(Suppression.email).where(Suppression.email.in_(list(by_key)), cond)
        ).all()
        out.update(by_key[e] for e in rows if e in by_key)
    return out


def recipients_for(session: Session, config: Config, digest: Digest) -> list[Recipient]:
    """The active, non-suppressed recipients of a digest, one per address, in a stable order."""
    exchange = config.exchange(digest.exchange_id)
    seen: set[str] = set()
    out: list[Recipient] = []
    for list_id in exchange.lists:
        list_language = config.lists[list_id].language if list_id in config.lists else None
        rows = session.execute(
            select(Contact.id, Contact.email, Contact.language)
            .join(ListMembership, ListMembership.contact_id == Contact.id)
            .where(ListMembership.list_id == list_id)
            .order_by(Contact.id)
        ).all()
        blocked = suppressed_addresses(session, (r.email for r in rows), list_id)
        for cid, email, _lang in rows:
            key = email.lower()
            if key in seen or key in blocked:
                continue
            seen.add(key)
            # The digest is written in one language (the exchange's, which config checks
            # equals each list's); the row keeps it so rendering happens once per language.
            language = digest.language or list_language or exchange.language
            out.append(Recipient(cid, email, list_id, language))
    return out


def enqueue_deliveries(session: Session, config: Config, digest: Digest, *, now: datetime) -> int:
    """Create one pending Delivery per recipient of ``digest``; return how many were new.

    Idempotent: calling it again (a retried approval, a list grown since) adds only the
    missing recipients; existing rows, whatever their state, are left alone. Runs in the
    caller's transaction and does not commit.
    """
    if digest.id is None:
        session.flush()
    recipients = recipients_for(session, config, digest)
    if not recipients:
        return 0
    existing = set(
        e.lower()
        for e in session.scalars(select(Delivery.email).where(Delivery.digest_id == digest.id))
    )
    rows = [
        {
            "digest_id": digest.id,
            "contact_id": r.contact_id,
            "email": r.email,
            "list_id": r.list_id,
            "language": r.language,
            "status": "pending",
            "message_id": new_message_id(config, digest.id),
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for r in recipients
        if r.email.lower() not in existing
    ]
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    for i in range(0, len(rows), 500):
        chunk = rows[i : i + 500]
        # ON CONFLICT DO NOTHING: a concurrent enqueue (two approvals racing) cannot make
        # a second row for the same address; the unique (digest_id, email) decides.
        if dialect == "postgresql":
            session.execute(postgresql.insert(Delivery).on_conflict_do_nothing(), chunk)
        elif dialect == "sqlite":
            session.execute(sqlite.insert(Delivery).on_conflict_do_nothing(), chunk)
        else:  # pragma: no cover - other databases are not supported yet
            session.execute(insert(Delivery), chunk)
    # Counted, not taken from rowcount: executemany rowcounts differ between drivers.
    total = session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.digest_id == digest.id)
    )
    return int(total or 0) - len(existing)
