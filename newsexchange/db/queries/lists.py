"""The SQL of media lists: contacts, list memberships and suppressions. Plain values in;
rows or values out. Suppressions are looked up by every stored form of an address the
caller passes (the address, and the hash an erased address is kept as).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Table,
    bindparam,
    delete,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsexchange.db.tables import Contact, ListMembership, Suppression

__all__ = [
    "ANALYZE_AFTER",
    "IN_BATCH",
    "StoredContact",
    "add_memberships",
    "add_suppression",
    "blocked_emails",
    "contact",
    "contact_states",
    "contacts_by_email",
    "delete_memberships",
    "first_suppression",
    "global_suppression",
    "insert_contacts",
    "list_recipients",
    "member_ids",
    "members",
    "memberships",
    "refresh_statistics",
    "suppressed_keys",
    "suppression_covering",
    "suppressions",
    "suppressions_stored_as",
    "update_contacts",
]

#: Values per ``IN (...)`` list: well under SQLite's 32,766 bound variables and PostgreSQL's
#: 65,535 per statement, large enough that 100,000 addresses take 50 round trips, not 200.
IN_BATCH = 2000

#: Rows written by one import past which the planner's statistics are refreshed
#: (:func:`refresh_statistics`); smaller imports leave that to autovacuum.
ANALYZE_AFTER = 1000

_T = TypeVar("_T")


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


# -- bulk import ------------------------------------------------------------------------------
# A list import of 100,000 contacts ran one ORM flush and one suppression query per row
# (21.6 s for 5,000, issue 13). These are its set-based statements: reads in IN-batches,
# writes as one executemany each, all in the caller's transaction.


def _batches(values: Sequence[_T], size: int = IN_BATCH) -> Iterator[list[_T]]:
    for i in range(0, len(values), size):
        yield list(values[i : i + size])


def _table(entity: type[Any]) -> Table:
    table = entity.__table__
    assert isinstance(table, Table)
    return table


@dataclass(frozen=True)
class StoredContact:
    """A contact as stored, with the lists it is on: what an import compares a row with."""

    id: int
    email: str
    name: str
    outlet: str
    language: str | None
    notes: str
    lists: frozenset[str]


def contact_states(session: Session, emails: Sequence[str]) -> dict[str, StoredContact]:
    """Stored address → contact and its lists, for those of ``emails`` we have.

    Two index lookups per batch (contacts by address, then their memberships by contact
    id) rather than one outer join: on PostgreSQL, right after a large import and before
    autovacuum has analyzed the tables, the planner chose nested loops over whole-table
    scans for the join (0.8 s per batch of 2,000; 13 s for 30,000 addresses)."""
    out: dict[str, StoredContact] = {}
    for chunk in _batches(emails):
        contacts = session.execute(
            select(
                Contact.id,
                Contact.email,
                Contact.name,
                Contact.outlet,
                Contact.language,
                Contact.notes,
            ).where(Contact.email.in_(chunk))
        ).all()
        lists: dict[int, set[str]] = {row[0]: set() for row in contacts}
        if lists:
            stmt = select(ListMembership.contact_id, ListMembership.list_id).where(
                ListMembership.contact_id.in_(list(lists))
            )
            for cid, list_id in session.execute(stmt):
                lists[cid].add(list_id)
        for cid, email, name, outlet, lang, notes in contacts:
            out[email] = StoredContact(cid, email, name, outlet, lang, notes, frozenset(lists[cid]))
    return out


def insert_contacts(session: Session, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Insert new contacts (dicts of the ``contacts`` columns but ``id``), in the order
    given (ids follow the file, as before); address → new id.

    One executemany, then the ids read back by address in IN-batches: with ``RETURNING``
    the same executemany took four times as long on PostgreSQL (6.9 s against 1.7 + 0.7 s
    for 100,000 contacts)."""
    if not rows:
        return {}
    session.connection().execute(insert(_table(Contact)), list(rows))
    if len(rows) >= ANALYZE_AFTER:
        refresh_statistics(session)  # the reads below must not plan for an empty table
    out: dict[str, int] = {}
    for chunk in _batches([r["email"] for r in rows]):
        stmt = select(Contact.email, Contact.id).where(Contact.email.in_(chunk))
        out.update((email, cid) for email, cid in session.execute(stmt))
    return out


def update_contacts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Set ``name, outlet, language, notes, updated_at`` of contacts by ``id`` (one
    executemany; every dict carries all five and ``id``)."""
    if not rows:
        return
    table = _table(Contact)
    stmt = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            name=bindparam("b_name"),
            outlet=bindparam("b_outlet"),
            language=bindparam("b_language"),
            notes=bindparam("b_notes"),
            updated_at=bindparam("b_updated_at"),
        )
    )
    params = [{f"b_{k}": v for k, v in r.items()} for r in rows]
    session.connection().execute(stmt, params)


def add_memberships(session: Session, pairs: Sequence[tuple[int, str]], *, now: datetime) -> None:
    """Put contacts on lists: (contact id, list id) pairs, one executemany. A pair that is
    already there (another import committed it meanwhile) is left alone, not an error."""
    if not pairs:
        return
    table = _table(ListMembership)
    dialect = session.get_bind().dialect.name
    values = [{"contact_id": cid, "list_id": lst, "created_at": now} for cid, lst in pairs]
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing(
            index_elements=["contact_id", "list_id"]
        )
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=["contact_id", "list_id"])
    else:
        stmt = insert(table)
    session.connection().execute(stmt, values)


def refresh_statistics(session: Session) -> None:
    """On PostgreSQL, ``ANALYZE`` the tables a large import has just filled.

    Without it the next import, before autovacuum gets round to the tables, ran its address
    lookups against statistics of an empty table: once psycopg prepares the statement (its
    fifth run) PostgreSQL picked a generic plan scanning every contact once per address in
    the batch (1.4 s per batch of 2,000 at 30,000 contacts, 13 s for the whole lookup).
    Inside the import's transaction, so it sees the new rows and costs ~0.1 s."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE contacts"))
        session.execute(text("ANALYZE list_memberships"))


def suppressed_keys(session: Session, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` (stored forms) have any suppression, for any list."""
    out: set[str] = set()
    for chunk in _batches(keys):
        stmt = select(Suppression.email).where(Suppression.email.in_(chunk)).distinct()
        out.update(session.scalars(stmt))
    return out


def member_ids(session: Session, list_id: str) -> list[tuple[int, str]]:
    """(membership id, contact's address) of every member of a list."""
    stmt = (
        select(ListMembership.id, Contact.email)
        .join(Contact, Contact.id == ListMembership.contact_id)
        .where(ListMembership.list_id == list_id)
    )
    return [(mid, email) for mid, email in session.execute(stmt)]


def delete_memberships(session: Session, ids: Sequence[int]) -> None:
    """Delete list memberships by id (in IN-batches)."""
    for chunk in _batches(ids):
        session.execute(delete(ListMembership).where(ListMembership.id.in_(chunk)))
