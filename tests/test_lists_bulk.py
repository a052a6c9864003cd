"""The set-based list import (issue 13) against the per-row import it replaced.

``reference_import`` below is the ORM import as it was before issue 13, kept verbatim as the
oracle: the same file on the same stored state must leave the same contacts, memberships and
report, on SQLite and on PostgreSQL, and a second import must change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from benchmarks.scale_import import make_csv
from newsexchange.db import Contact, Database, ListMembership, Session, Suppression
from newsexchange.db.queries import lists as queries
from newsexchange.delivery.lists import (
    ContactRow,
    ImportReport,
    ParsedList,
    import_rows,
    is_suppressed_any,
    normalize_email,
    parse_csv,
    plan_import,
)
from newsexchange.delivery.unsubscribe import email_hash

LIST = "petrozavodsk-media"
KNOWN = [LIST, "karelia-press", "joensuu-media"]
SEEDED_AT = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

TRICKY = """\
name,email,outlet,language,lists,notes
Анна Смирнова,Anna.Smirnova@Example.ORG,ГТРК «Карелия»,ru,,
Eero Existing,eero@example.org,Yle,fi,,
,same@example.org,,,,
Olga,olga@example.org,,,joensuu-media,
Ivan,ivan@example.org,,,karelia-press,
Duplicate Anna,ANNA.SMIRNOVA@example.org,,ru,karelia-press,later note
Boris,not-an-address,Radio,ru,,
Gone Person,erased@example.org,,,,
Unsub,unsub@example.org,,ru,,
Lang,lang@example.org,,de,,
"Орлов, Дмитрий",orlov@example.org,"Столица
на Onego",ru,karelia-press;joensuu-media,two-line outlet
Extra,extra@example.org,,ru,,,unexpected
eero again,EERO@example.org,,,joensuu-media,fills the empty note

Desk,desk@пример.рф,,,,
"""


# -- the oracle: the import before issue 13 ---------------------------------------------------


def reference_import(
    session: Session, parsed: ParsedList, *, list_id: str, now: datetime, replace: bool = False
) -> ImportReport:
    report = ImportReport(list_id, merged_duplicates=parsed.merged_duplicates, read=parsed.read)
    report.skipped = list(parsed.skipped)
    emails = [r.email for r in parsed.rows]
    existing = queries.contacts_by_email(session, emails)
    for row in parsed.rows:
        contact = existing.get(row.email)
        if contact is None:
            contact = Contact(
                email=row.email,
                name=row.name,
                outlet=row.outlet,
                language=row.language,
                notes=row.notes,
                created_at=now,
                updated_at=now,
            )
            session.add(contact)
            for lst in row.lists:
                contact.memberships.append(ListMembership(list_id=lst, created_at=now))
            report.imported += 1
        else:
            outcome = _reference_update(contact, row, list_id=list_id, now=now)
            setattr(report, outcome, getattr(report, outcome) + 1)
        if is_suppressed_any(session, row.email):
            report.suppressed += 1
    session.flush()
    if replace:
        keep = set(emails)
        for membership, email in queries.memberships(session, list_id):
            if email not in keep:
                session.delete(membership)
                report.removed += 1
        session.flush()
    return report


def _reference_update(
    contact: Contact, row: ContactRow, *, list_id: str, now: datetime
) -> Literal["imported", "updated", "unchanged"]:
    changed = False
    for attr in ("name", "outlet", "language", "notes"):
        new = getattr(row, attr)
        if new and new != getattr(contact, attr):
            setattr(contact, attr, new)
            changed = True
    have = {m.list_id for m in contact.memberships}
    newly = [lst for lst in row.lists if lst not in have]
    for lst in newly:
        contact.memberships.append(ListMembership(list_id=lst, created_at=now))
    if changed:
        contact.updated_at = now
        return "updated"
    if list_id not in have:
        return "imported"
    return "updated" if newly else "unchanged"


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def two_dbs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    """Two fresh databases of one kind: one for the bulk import, one for the oracle."""
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path}/bulk.db", f"sqlite:///{tmp_path}/reference.db"]
    else:
        factory: Callable[[], str] = request.getfixturevalue("pg_server_url")
        urls = [factory(), factory()]
    dbs = (Database(urls[0]), Database(urls[1]))
    yield dbs
    for d in dbs:
        d.dispose()


def seed(db: Database) -> None:
    """Contacts and suppressions already there before the file comes in."""
    with db.session() as s:
        for email, name, outlet, lang, lists in [
            ("eero@example.org", "Eero Existing", "Karjalainen", "fi", [LIST]),
            ("same@example.org", "Same", "Radio Pooki", None, [LIST]),
            ("olga@example.org", "Olga", "", None, ["joensuu-media"]),
            ("ivan@example.org", "Ivan", "", "ru", [LIST]),
            ("stay@example.org", "Not In The File", "", None, [LIST, "karelia-press"]),
        ]:
            c = Contact(
                email=email,
                name=name,
                outlet=outlet,
                language=lang,
                notes="",
                created_at=SEEDED_AT,
                updated_at=SEEDED_AT,
            )
            c.memberships = [ListMembership(list_id=x, created_at=SEEDED_AT) for x in lists]
            s.add(c)
        s.add(
            Suppression(
                email=email_hash("erased@example.org"),
                list_id=None,
                reason="erased",
                created_at=SEEDED_AT,
            )
        )
        s.add(
            Suppression(
                email="unsub@example.org", list_id=LIST, reason="unsubscribed", created_at=SEEDED_AT
            )
        )


def snapshot(db: Database) -> dict[str, Any]:
    """Everything an import may change, in a form two databases can be compared by (ids
    differ between databases; their order, which sends follow, is kept as a list)."""
    with db.session() as s:
        contacts = s.execute(
            select(
                Contact.email,
                Contact.name,
                Contact.outlet,
                Contact.language,
                Contact.notes,
                Contact.created_at,
                Contact.updated_at,
            ).order_by(Contact.id)
        ).all()
        members = s.execute(
            select(Contact.email, ListMembership.list_id, ListMembership.created_at)
            .join(Contact, Contact.id == ListMembership.contact_id)
            .order_by(Contact.email, ListMembership.list_id)
        ).all()
        sups = s.execute(
            select(Suppression.email, Suppression.list_id).order_by(Suppression.email)
        ).all()
    return {
        "contacts": [tuple(r) for r in contacts],
        "memberships": [tuple(r) for r in members],
        "suppressions": [tuple(r) for r in sups],
    }


def run_import(
    db: Database,
    text: str,
    how: Callable[..., ImportReport],
    *,
    replace: bool = False,
    now: datetime = NOW,
) -> dict[str, Any]:
    parsed = parse_csv(text, list_id=LIST, known_lists=KNOWN)
    with db.session() as s:
        return how(s, parsed, list_id=LIST, now=now, replace=replace).to_json()


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("replace", [False, True])
def test_bulk_import_of_a_tricky_file_matches_the_per_row_import(
    two_dbs: tuple[Database, Database], replace: bool
) -> None:
    bulk, reference = two_dbs
    seed(bulk)
    seed(reference)

    got = run_import(bulk, TRICKY, import_rows, replace=replace)
    expected = run_import(reference, TRICKY, reference_import, replace=replace)

    assert got == expected
    assert snapshot(bulk) == snapshot(reference)
    # What the oracle says, spelled out, so a change to both would still be noticed.
    assert (got["imported"], got["updated"], got["unchanged"]) == (6, 2, 1)
    assert (got["merged_duplicates"], got["suppressed"]) == (2, 2)
    assert (got["read"], got["removed"]) == (14, 1 if replace else 0)
    assert [p["line"] for p in got["skipped"]] == [8, 11, 14]
    by_email = {c[0]: c for c in snapshot(bulk)["contacts"]}
    assert by_email["eero@example.org"][2:5] == ("Yle", "fi", "fills the empty note")
    assert by_email["eero@example.org"][5:] == (SEEDED_AT, NOW)  # updated, not re-created
    assert by_email["same@example.org"][1:3] == ("Same", "Radio Pooki")  # blanks clear nothing
    lists_of = {}
    for email, lst, _ in snapshot(bulk)["memberships"]:
        lists_of.setdefault(email, []).append(lst)
    assert lists_of["anna.smirnova@example.org"] == ["karelia-press", LIST]
    assert lists_of["orlov@example.org"] == ["joensuu-media", "karelia-press", LIST]
    assert lists_of["stay@example.org"] == (
        ["karelia-press"] if replace else ["karelia-press", LIST]
    )


def test_a_second_bulk_import_changes_nothing(two_dbs: tuple[Database, Database]) -> None:
    db, _ = two_dbs
    seed(db)
    run_import(db, TRICKY, import_rows)
    before = snapshot(db)

    again = run_import(db, TRICKY, import_rows, now=datetime(2026, 6, 1, tzinfo=UTC))

    assert (again["imported"], again["updated"], again["removed"]) == (0, 0, 0)
    assert again["unchanged"] == 9 and again["suppressed"] == 2
    assert snapshot(db) == before  # not even a timestamp moved


def test_a_generated_list_over_half_known_contacts_matches_the_per_row_import(
    two_dbs: tuple[Database, Database],
) -> None:
    """1,500 generated rows (Finnish and Russian names, duplicates in other case, bad lines)
    imported over an earlier, different file of 700: new, changed and untouched contacts."""
    bulk, reference = two_dbs
    earlier = make_csv(700, seed=1)
    later = make_csv(1500, seed=1)  # the same first rows (same seed), then more
    later = later.replace("Yle Pohjois-Karjala", "Yle Joensuu").replace(",freelance", ",staff")
    for db, how in ((bulk, import_rows), (reference, reference_import)):
        run_import(db, earlier, how, now=SEEDED_AT)

    got = run_import(bulk, later, import_rows, replace=True)
    expected = run_import(reference, later, reference_import, replace=True)

    assert got == expected
    assert snapshot(bulk) == snapshot(reference)
    assert got["imported"] > 500 and got["updated"] > 50 and got["unchanged"] > 50
    assert got["merged_duplicates"] > 0 and got["skipped"]


def test_ten_thousand_contacts_import_and_a_repeat_changes_nothing(
    two_dbs: tuple[Database, Database],
) -> None:
    db, _ = two_dbs
    text = make_csv(10_000)

    first = run_import(db, text, import_rows)
    after_first = snapshot(db)
    second = run_import(db, text, import_rows, now=datetime(2026, 7, 1, tzinfo=UTC))

    parsed = parse_csv(text, list_id=LIST, known_lists=KNOWN)
    assert first["imported"] == len(parsed.rows) == len(after_first["contacts"])
    assert (
        first["read"]
        == 10_000
        == (first["imported"] + first["merged_duplicates"] + len(first["skipped"]))
    )
    members = [m for m in after_first["memberships"] if m[1] == LIST]
    assert len(members) == len(parsed.rows)
    assert (second["imported"], second["updated"], second["unchanged"]) == (0, 0, len(parsed.rows))
    assert snapshot(db) == after_first
    # ids follow the file: a send goes down the list in the order it was imported
    assert [c[0] for c in after_first["contacts"]] == [r.email for r in parsed.rows]


def test_an_import_whose_transaction_is_rolled_back_leaves_nothing(
    two_dbs: tuple[Database, Database],
) -> None:
    """import_rows commits nothing itself: a failure anywhere before the caller's commit
    (here: right after it returns) leaves the database as it was."""
    db, _ = two_dbs
    seed(db)
    before = snapshot(db)
    parsed = parse_csv(TRICKY, list_id=LIST, known_lists=KNOWN)

    with pytest.raises(RuntimeError, match="after the import"), db.session() as s:
        import_rows(s, parsed, list_id=LIST, now=NOW, replace=True)
        raise RuntimeError("after the import")

    assert snapshot(db) == before


def test_contacts_loaded_in_the_session_see_the_import() -> None:
    """A caller holding ORM objects in the same session reads the imported state (the bulk
    statements bypass the identity map; the import expires it)."""
    db = Database("sqlite:///:memory:")
    seed(db)
    with db.session() as s:
        eero = s.scalars(select(Contact).where(Contact.email == "eero@example.org")).one()
        assert eero.outlet == "Karjalainen"
        parsed = parse_csv(TRICKY, list_id=LIST, known_lists=KNOWN)
        import_rows(s, parsed, list_id=LIST, now=NOW)
        assert eero.outlet == "Yle"
        assert sorted(m.list_id for m in eero.memberships) == ["joensuu-media", LIST]
    db.dispose()


def test_the_plan_counts_rows_as_the_per_row_import_did_without_a_database() -> None:
    stored = {
        "a@example.org": queries.StoredContact(1, "a@example.org", "A", "", None, "", frozenset()),
        "b@example.org": queries.StoredContact(
            2, "b@example.org", "B", "Yle", "fi", "", frozenset([LIST])
        ),
        "c@example.org": queries.StoredContact(
            3, "c@example.org", "C", "", None, "", frozenset([LIST])
        ),
        "d@example.org": queries.StoredContact(
            4, "d@example.org", "D", "", None, "", frozenset([LIST])
        ),
    }
    rows = [
        ContactRow(2, "new@example.org", name="N", lists=[LIST]),
        ContactRow(3, "a@example.org", lists=[LIST]),  # existing, newly on the list
        ContactRow(4, "b@example.org", outlet="Kaleva", lists=[LIST]),  # a detail changes
        ContactRow(5, "c@example.org", lists=[LIST, "karelia-press"]),  # joins another list
        ContactRow(6, "d@example.org", name="", lists=[LIST]),  # nothing new
    ]

    plan = plan_import(rows, stored, list_id=LIST)

    assert [r.email for r in plan.new] == ["new@example.org"]
    assert (plan.imported, plan.updated, plan.unchanged) == (2, 2, 1)
    assert [(have.id, fields) for have, fields in plan.changed] == [
        (2, {"name": "B", "outlet": "Kaleva", "language": "fi", "notes": ""})
    ]
    assert plan.joins == [(1, LIST), (3, "karelia-press")]


# -- the address check: once per domain, same verdicts ---------------------------------------


def reference_normalize(value: str) -> str:
    """normalize_email as it was: email-validator's validate_email on every address."""
    value = value.strip()
    if not value:
        raise ValueError("email is empty")
    try:
        result = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address: {exc}") from None
    return (result.ascii_email or result.normalized).lower()


def _verdict(check: Callable[[str], str], value: str) -> str:
    try:
        return "ok " + check(value)
    except ValueError as exc:
        return "error " + str(exc)


HAND_PICKED = [
    "Anna.Smirnova@Example.ORG",
    "desk@пример.рф",
    "desk@xn--e1afmkfd.xn--p1ai",
    "Postmaster@example.org",
    "анна@example.org",  # a non-ASCII local part: refused (no SMTPUTF8)
    '"quoted local"@example.org',
    "Anna <anna@example.org>",
    "anna@[127.0.0.1]",
    "anna@",
    "@example.org",
    "anna..smirnova@example.org",
    "anna@example",
    "anna@localhost",
    "anna@example.invalid",
    "anna@-example.org",
    "anna@exa_mple.org",
    "a" * 65 + "@example.org",
    "anna@" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".org",
    "anna@" + "ä" * 60 + ".example.org",
    "e\u0301lise@example.org",  # not NFC
    "anna@ﬁnland.example.org",  # a ligature NFKC/UTS-46 maps
    "anna@EXAMPLE.org.",
    "anna@example.org@example.org",
    "anna smirnova@example.org",
]


@pytest.mark.parametrize("value", HAND_PICKED)
def test_the_cached_address_check_agrees_with_email_validator(value: str) -> None:
    # Twice: the second run takes the cached domain.
    for _ in range(2):
        assert _verdict(normalize_email, value) == _verdict(reference_normalize, value)


_ADDRESS_CHARS = "aZ09.-_+'ä я\u0301ﬁ\"<>[]@xn-"


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=_ADDRESS_CHARS, max_size=20),
    st.sampled_from(["example.org", "пример.рф", "xn--e1afmkfd.xn--p1ai", "EXAMPLE.org", ""]),
    st.text(alphabet=_ADDRESS_CHARS, max_size=12),
)
def test_the_cached_address_check_agrees_on_generated_addresses(
    local: str, domain: str, tail: str
) -> None:
    for value in (f"{local}@{domain}", f"{local}@{tail}{domain}", f"{local}{tail}"):
        assert _verdict(normalize_email, value) == _verdict(reference_normalize, value)
