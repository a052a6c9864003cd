"""Media lists: CSV parsing (pure), the ``lists`` commands on a real database, GDPR access
and erasure, and the sample lists shipped in lists/."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from newsexchange.cli import main
from newsexchange.config import Config, load_config
from newsexchange.db import Contact, Database, Delivery, ListMembership, Suppression
from newsexchange.delivery.lists import parse_csv
from newsexchange.delivery.send import run_send
from newsexchange.delivery.unsubscribe import email_hash, suppress
from newsexchange.errors import DeliveryError
from tests.test_delivery_support import NOW, delivery_config, seed_digest

REPO = Path(__file__).resolve().parent.parent
KNOWN = ["petrozavodsk-media", "karelia-press"]

MESSY = """\
name,email,outlet,language,lists,notes
Анна Смирнова,Anna.Smirnova@Example.ORG,ГТРК «Карелия»,ru,,
Boris,not-an-address,Radio,ru,,
"Орлов, Дмитрий",orlov@example.org,"Столица
на Onego",ru,karelia-press,two-line outlet
Duplicate Anna,anna.smirnova@example.org,,ru,karelia-press,later note
Lang,lang@example.org,,de,,
Lists,lists@example.org,,ru,no-such-list,
Extra,extra@example.org,,ru,,,unexpected

Desk,desk@пример.рф,,,,
"""


def test_csv_rows_are_validated_normalized_and_merged_with_line_numbers() -> None:
    parsed = parse_csv(MESSY, list_id="petrozavodsk-media", known_lists=KNOWN)

    emails = [r.email for r in parsed.rows]
    assert emails == [
        "anna.smirnova@example.org",
        "orlov@example.org",
        "desk@xn--e1afmkfd.xn--p1ai",
    ]
    assert parsed.merged_duplicates == 1
    anna = parsed.rows[0]
    assert anna.name == "Анна Смирнова"  # the first row wins …
    assert anna.notes == "later note"  # … later rows only fill what it left empty
    assert anna.lists == ["petrozavodsk-media", "karelia-press"]
    assert parsed.rows[1].outlet == "Столица\nна Onego" and parsed.rows[1].name == "Орлов, Дмитрий"
    assert parsed.rows[2].language is None  # blank: the list's language applies
    problems = {p.line: p.error for p in parsed.skipped}
    assert set(problems) == {3, 7, 8, 9}  # line 4-5 is one quoted record, 10 is blank
    assert "not a valid email address" in problems[3]
    assert "'de' is not supported" in problems[7]
    assert "unknown list(s) 'no-such-list'" in problems[8]
    assert "7 fields but the header has 6" in problems[9]


def test_semicolon_csv_with_bom_from_excel_is_read() -> None:
    text = "\ufeffname;email;outlet\nLiisa;liisa@example.org;Yle\n"
    parsed = parse_csv(text, list_id="petrozavodsk-media", known_lists=KNOWN)
    assert [(r.name, r.email, r.outlet) for r in parsed.rows] == [
        ("Liisa", "liisa@example.org", "Yle")
    ]


def test_a_header_with_an_unknown_column_is_refused_whole() -> None:
    with pytest.raises(DeliveryError, match=r"line 1: unknown column\(s\) 'e-mail'"):
        parse_csv("name,e-mail\nA,a@example.org\n", list_id="x", known_lists=["x"])


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


@pytest.fixture
def cfg(write_config: Callable[..., Config]) -> Config:
    return delivery_config(write_config, backend="outbox")


def test_lists_import_reports_counts_and_a_second_import_changes_nothing(
    cfg: Config,
    db_for: Callable[[Config], Database],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSEXCHANGE_SECRET_KEY", "s3cret")
    csv_file = tmp_path / "media.csv"
    csv_file.write_text(MESSY, encoding="utf-8")
    conf = str(cfg.path)

    code, out = _cli(
        capsys, "lists", "import", "petrozavodsk-media", str(csv_file), "--json", "--config", conf
    )

    data = json.loads(out)
    assert code == 1  # rows were skipped: the work ran but not all of it
    assert (data["imported"], data["updated"], data["merged_duplicates"]) == (3, 0, 1)
    assert [s["line"] for s in data["skipped"]] == [3, 7, 8, 9]
    db = db_for(cfg)
    with db.session() as s:
        assert s.scalars(select(Contact.email).order_by(Contact.email)).all() == [
            "anna.smirnova@example.org",
            "desk@xn--e1afmkfd.xn--p1ai",
            "orlov@example.org",
        ]
        karelia = s.scalars(
            select(ListMembership.list_id).where(ListMembership.list_id == "karelia-press")
        ).all()
        assert len(karelia) == 2

    code, out = _cli(
        capsys, "lists", "import", "petrozavodsk-media", str(csv_file), "--json", "--config", conf
    )
    again = json.loads(out)
    assert (again["imported"], again["updated"], again["unchanged"]) == (0, 0, 3)

    code, out = _cli(capsys, "lists", "show", "petrozavodsk-media", "--json", "--config", conf)
    shown = json.loads(out)
    assert code == 0 and shown["members"] == 3 and shown["active"] == 3


def test_export_then_import_into_an_empty_database_round_trips(
    cfg: Config,
    write_config: Callable[..., Config],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSEXCHANGE_SECRET_KEY", "s3cret")
    src = tmp_path / "in.csv"
    src.write_text(MESSY, encoding="utf-8")
    conf = str(cfg.path)
    _cli(capsys, "lists", "import", "petrozavodsk-media", str(src), "--config", conf)
    out_file = tmp_path / "out.csv"
    code, out = _cli(
        capsys, "lists", "export", "petrozavodsk-media", "--output", str(out_file), "--config", conf
    )
    assert code == 0 and "wrote 3 contact(s)" in out

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(cfg.path, other / "feeds.yaml")  # type: ignore[arg-type]
    conf2 = str(other / "feeds.yaml")
    code, out = _cli(
        capsys, "lists", "import", "petrozavodsk-media", str(out_file), "--json", "--config", conf2
    )
    assert code == 0 and json.loads(out)["imported"] == 3
    code, first = _cli(capsys, "lists", "export", "petrozavodsk-media", "--config", conf)
    code, second = _cli(capsys, "lists", "export", "petrozavodsk-media", "--config", conf2)
    assert first == second and "Орлов, Дмитрий" in first


def test_erasure_removes_personal_data_but_keeps_an_unsubscribe_honoured(
    cfg: Config,
    db_for: Callable[[Config], Database],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSEXCHANGE_SECRET_KEY", "s3cret")
    db = db_for(cfg)
    did = seed_digest(db, cfg, [("Анна", "anna@example.org"), ("Boris", "boris@example.org")])
    assert run_send(db, cfg, now=NOW, digest_id=did).sent == 2
    with db.session() as s:
        suppress(
            s, "anna@example.org", list_id="petrozavodsk-media", reason="unsubscribed", now=NOW
        )
    conf = str(cfg.path)

    code, out = _cli(capsys, "lists", "export-contact", "anna@example.org", "--config", conf)
    held = json.loads(out)
    assert code == 0 and held["found"] and held["contact"]["name"] == "Анна"
    assert held["contact"]["lists"][0]["list"] == "petrozavodsk-media"
    assert [d["status"] for d in held["deliveries"]] == ["sent"]
    assert held["suppressions"][0]["reason"] == "unsubscribed"

    code, out = _cli(capsys, "lists", "erase", "Anna@Example.org", "--json", "--config", conf)
    erased = json.loads(out)
    assert code == 0 and erased["contact_removed"] and erased["deliveries_anonymized"] == 1

    with db.session() as s:
        assert s.scalar(select(Contact).where(Contact.email == "anna@example.org")) is None
        everything = " ".join(
            [str(d.email) + str(d.last_error) for d in s.scalars(select(Delivery))]
            + [str(x.email) + str(x.detail) for x in s.scalars(select(Suppression))]
        )
        assert "anna@" not in everything  # the address is nowhere …
        assert email_hash("anna@example.org") in everything  # … only its hash
    code, out = _cli(capsys, "lists", "export-contact", "anna@example.org", "--config", conf)
    after = json.loads(out)
    assert after["contact"] is None and after["deliveries"] == []
    assert after["suppressions"][0]["stored_as"] == "hash"

    # Re-imported from an old CSV, she is on the list again but never mailed.
    old = tmp_path / "old.csv"
    old.write_text("name,email\nАнна,anna@example.org\n", encoding="utf-8")
    code, out = _cli(
        capsys, "lists", "import", "petrozavodsk-media", str(old), "--json", "--config", conf
    )
    assert json.loads(out)["suppressed"] == 1
    did2 = seed_digest(db, cfg, [("Carl", "carl@example.org")], period_start=NOW.date())
    report = run_send(db, cfg, now=NOW, digest_id=did2)
    with db.session() as s:
        mailed = {d.email for d in s.scalars(select(Delivery).where(Delivery.digest_id == did2))}
    assert "anna@example.org" not in mailed and report.sent == 2  # boris and carl


@pytest.mark.parametrize("list_id", ["petrozavodsk-media", "joensuu-media", "international-media"])
def test_the_shipped_sample_lists_import_cleanly(
    list_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSEXCHANGE_SECRET_KEY", "s3cret")
    monkeypatch.setenv("NEWSEXCHANGE_DATABASE_URL", f"sqlite:///{tmp_path}/lists.db")
    shutil.copy(REPO / "feeds.yaml", tmp_path / "feeds.yaml")
    shutil.copytree(REPO / "lists", tmp_path / "lists")
    cfg = load_config(tmp_path / "feeds.yaml")
    assert cfg.lists[list_id].file == f"lists/{list_id}.csv"

    code, out = _cli(
        capsys, "lists", "import", list_id, "--json", "--config", str(tmp_path / "feeds.yaml")
    )

    data = json.loads(out)
    assert code == 0 and data["skipped"] == [] and data["imported"] >= 3
    text = (REPO / "lists" / f"{list_id}.csv").read_text(encoding="utf-8")
    assert all("@example.org" in line for line in text.splitlines()[1:] if line)


def test_erase_with_keep_out_stops_a_reimported_address_without_keeping_it(
    cfg: Config,
    db_for: Callable[[Config], Database],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSEXCHANGE_SECRET_KEY", "s3cret")
    conf = str(cfg.path)
    old = tmp_path / "old.csv"
    old.write_text("name,email\nBoris,boris@example.org\n", encoding="utf-8")
    _cli(capsys, "lists", "import", "petrozavodsk-media", str(old), "--config", conf)

    code, out = _cli(
        capsys, "lists", "erase", "boris@example.org", "--keep-out", "--json", "--config", conf
    )

    assert code == 0 and json.loads(out)["suppressions_hashed"] == 1
    db = db_for(cfg)
    with db.session() as s:
        assert s.scalars(select(Suppression.email)).all() == [email_hash("boris@example.org")]
    code, out = _cli(
        capsys, "lists", "import", "petrozavodsk-media", str(old), "--json", "--config", conf
    )
    assert json.loads(out)["suppressed"] == 1


def test_an_unclosed_quote_is_reported_by_its_line_and_swallows_no_later_row(
    cfg: Config,
    db_for: Callable[[Config], Database],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSEXCHANGE_SECRET_KEY", "s3cret")
    csv_file = tmp_path / "media.csv"
    csv_file.write_text(
        "name,email,outlet\n"
        'Anna,anna@example.org,"Radio\nOnego"\n'  # a quoted cell over two lines: fine
        '"Boris,boris@example.org,TV\n'  # a quote left open
        "Vera,vera@example.org,TV\n"
        "Gleb,not-an-email,TV\n"
        "Anna A.,anna@example.org,\n",
        encoding="utf-8",
    )
    code, out = _cli(
        capsys,
        "lists", "import", "petrozavodsk-media", str(csv_file), "--json", "--config", str(cfg.path),
    )  # fmt: skip
    data = json.loads(out)
    assert code == 1
    assert [(p["line"], "unclosed quote" in p["error"]) for p in data["skipped"]] == [
        (4, True),
        (6, False),
    ]
    db = db_for(cfg)
    with db.session() as s:
        assert s.scalars(select(Contact.email).order_by(Contact.email)).all() == [
            "anna@example.org",
            "vera@example.org",
        ]
    counted = (
        data["imported"] + data["updated"] + data["unchanged"] + data["merged_duplicates"]
    ) + len(data["skipped"])
    assert data["read"] == 5 == counted


def test_lists_import_with_replace_updates_and_removes_on_sqlite_and_postgres(
    cfg: Config,
    any_db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bulk import behind the command (issue 13) on both databases: a second file
    changes a contact, puts one on a further list, adds one, and with --replace takes the one
    it lacks off the list (the contact and its other list stay)."""
    monkeypatch.setenv("NEWSEXCHANGE_SECRET_KEY", "s3cret")
    monkeypatch.setenv("NEWSEXCHANGE_DATABASE_URL", any_db_url)
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text(MESSY, encoding="utf-8")
    second.write_text(
        "name,email,outlet,language,lists,notes\n"
        "Анна Смирнова,anna.smirnova@example.org,Радио Карелии,ru,,\n"
        "Вера,Vera@example.org,,ru,,\n"
        "Desk,desk@пример.рф,,,karelia-press,\n",
        encoding="utf-8",
    )
    conf = str(cfg.path)
    _cli(capsys, "lists", "import", "petrozavodsk-media", str(first), "--config", conf)

    code, out = _cli(
        capsys,
        "lists", "import", "petrozavodsk-media", str(second), "--replace", "--config", conf,
    )  # fmt: skip

    assert code == 0
    assert out.strip() == (
        "petrozavodsk-media: 3 row(s) read: 1 imported, 2 updated, 0 unchanged, "
        "0 duplicate row(s) merged, 0 skipped, 1 removed"
    )
    code, out = _cli(
        capsys, "lists", "import", "petrozavodsk-media", str(second), "--replace", "--json",
        "--config", conf,
    )  # fmt: skip
    assert json.loads(out)["unchanged"] == 3
    db = Database(any_db_url)
    try:
        with db.session() as s:
            anna = s.scalars(
                select(Contact).where(Contact.email == "anna.smirnova@example.org")
            ).one()
            assert anna.outlet == "Радио Карелии" and anna.notes == "later note"
            desk = s.scalars(select(Contact).where(Contact.email.like("desk@%"))).one()
            assert sorted(m.list_id for m in desk.memberships) == [
                "karelia-press",
                "petrozavodsk-media",
            ]
            orlov = s.scalars(select(Contact).where(Contact.email == "orlov@example.org")).one()
            assert [m.list_id for m in orlov.memberships] == ["karelia-press"]  # off this list
    finally:
        db.dispose()
