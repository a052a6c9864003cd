"""The SQL of media lists: contacts, list memberships and suppressions. Plain values in;
rows or values out. Suppressions are looked up by every stored form of an address the
caller passes (the address, and the hash an erased address is kept as).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from newsexchange.db.tables import Contact, ListMembership, Suppression

__all__ = [
    "add_suppression",
    "blocked_emails",
    "contact",
    "contacts_by_email",
    "first_suppression",
    "global_suppression",
    "list_recipients",
    "members",
    "memberships",
    "suppression_covering",
    "suppressions",
    "suppressions_stored_as",
]


def list_recipients(session: Session, list_id: str) -> list[tuple[int, str, str | None]]:
    """(contact id, email, language) of every member of a list, by contact id."""
    stmt = (
        select(Contact.id, Contact.email, Contact.language)
        .join(ListMembership, ListMembership.contact_id == Contact.id)
        .where(ListMembership.list_id == list_id)
        .order_by(Contact.id)
    )
    return [(cid, email, lang) for cid, email, lang in session.execute(stmt)]


def blocked_emails(session: Session, keys: Sequence[str], list_id: str | None) -> list[str]:
    """Which of ``keys`` (stored forms) have a suppression that is global or for ``list_id``."""
    cond: ColumnElement[bool] = Suppression.list_id.is_(None)
    if list_id is not None:
        cond = or_(cond, Suppression.list_id == list_id)
    stmt = select(Suppression.email).where(Suppression.email.in_(list(keys)), cond)
    return list(session.scalars(stmt).all())


def suppressions(session: Session, keys: Sequence[str]) -> list[Suppression]:
    """Every suppression stored under one of ``keys``."""
    stmt = select(Suppression).where(Suppression.email.in_(list(keys)))
    return list(session.scalars(stmt).all())


def first_suppression(session: Session, keys: Sequence[str]) -> int | None:
    """The id of any one suppression stored under one of ``keys``, or None."""
    stmt = select(Suppression.id).where(Suppression.email.in_(list(keys))).limit(1)
    return session.scalar(stmt)


def suppressions_stored_as(session: Session, key: str) -> list[Suppression]:
    """The suppressions stored under exactly ``key``."""
    return list(session.scalars(select(Suppression).where(Suppression.email == key)).all())


def suppression_covering(session: Session, key: str, list_id: str | None) -> int | None:
    """A suppression under ``key`` that covers ``list_id`` (global, or that very list;
    ``None`` asks for a global one only), by id."""
    cond = (
        or_(Suppression.list_id == list_id, Suppression.list_id.is_(None))
        if list_id is not None
        else Suppression.list_id.is_(None)
    )
    return session.scalar(select(Suppression.id).where(Suppression.email == key, cond))


def global_suppression(session: Session, key: str) -> int | None:
    stmt = select(Suppression.id).where(Suppression.email == key, Suppression.list_id.is_(None))
    return session.scalar(stmt)


def add_suppression(
    session: Session,
    key: str,
    *,
    list_id: str | None,
    reason: str,
    now: datetime,
    detail: str | None = None,
) -> None:
    session.add(
        Suppression(email=key, list_id=list_id, reason=reason, detail=detail, created_at=now)
    )
    session.flush()


def contact(session: Session, email: str) -> Contact | None:
    return session.scalar(select(Contact).where(Contact.email == email))


def contacts_by_email(session: Session, emails: Sequence[str]) -> dict[str, Contact]:
    """Stored address → contact, for those of ``emails`` we have (in chunks of 500)."""
    out: dict[str, Contact] = {}
    for i in range(0, len(emails), 500):
        stmt = select(Contact).where(Contact.email.in_(list(emails[i : i + 500])))
        for c in session.scalars(stmt):
            out[c.email] = c
    return out


def members(session: Session, list_id: str) -> list[Contact]:
    """The contacts on a list, by address."""
    stmt = (
        select(Contact)
        .join(ListMembership, ListMembership.contact_id == Contact.id)
        .where(ListMembership.list_id == list_id)
        .order_by(Contact.email)
    )
    return list(session.scalars(stmt))


def memberships(session: Session, list_id: str) -> list[tuple[ListMembership, str]]:
    """(membership, contact's address) of every member of a list."""
    stmt = (
        select(ListMembership, Contact.email)
        .join(Contact, Contact.id == ListMembership.contact_id)
        .where(ListMembership.list_id == list_id)
    )
    return [(m, email) for m, email in session.execute(stmt).all()]
