"""CR, LF and other controls in data never become mail structure: a contact name imported
from CSV, a stored name, an exchange name (the subject), a list name (List-Id) and an item
title, each delivered through a real aiosmtpd server on loopback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

import pytest
from sqlalchemy import select

from newsexchange.cli import main
from newsexchange.config import Config, load_config
from newsexchange.db import Contact, Database, DigestItem, ListMembership, Translation
from newsexchange.delivery.send import run_send
from newsexchange.mail.headers import header_text, mailbox
from tests.servers import SMTPServer
from tests.test_delivery_support import NOW, delivery_config, seed_digest

EVIL = "evil@x.example"
INJECTED = f"Anna\r\nBcc: {EVIL}"
# The usual header names, so a test can tell "one more header" from "the same headers".
EXPECTED_HEADERS = {
    "from",
    "to",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "precedence",
    "auto-submitted",
    "x-auto-response-suppress",
    "mime-version",
    "content-type",
    "content-language",
}


def _header_names(msg: EmailMessage) -> set[str]:
    return {k.lower() for k in msg}


def _raw_header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def _assert_only_recipient(smtp: SMTPServer, address: str) -> EmailMessage:
    """Exactly one message, to ``address`` only: envelope, To header and no Bcc/Cc."""
    assert len(smtp.envelopes) == 1
    _mail_from, rcpts, raw = smtp.envelopes[0]
    assert rcpts == [address]  # the SMTP RCPT list has the contact and nobody else
    msg = smtp.messages[0]
    assert msg["Bcc"] is None and msg["Cc"] is None
    assert [a for _n, a in getaddresses(msg.get_all("To", []))] == [address]
    assert len(msg.get_all("To", [])) == 1
    # No header line in the raw bytes starts a Bcc (the parser could hide a folded one).
    lines = _raw_header_block(raw).split(b"\r\n")
    assert not [ln for ln in lines if ln.lower().startswith((b"bcc:", b"cc:"))]
    assert _header_names(msg) <= EXPECTED_HEADERS, _header_names(msg) - EXPECTED_HEADERS
    return msg


def _reload(cfg: Config, replace: dict[str, str]) -> Config:
    """The same feeds.yaml with some text replaced (YAML escapes such as \\r\\n kept)."""
    text = Path(cfg.path).read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    Path(cfg.path).write_text(text, encoding="utf-8")
    return load_config(cfg.path, env={"SG_KEY": "SG.test-key", "NEWSEXCHANGE_SECRET_KEY": "s3cret"})


# -- the function -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (INJECTED, f"Anna Bcc: {EVIL}"),
        ("Anna \r\n Smirnova", "Anna Smirnova"),
        ("Tab\there\x00nul\x7fdel\x85nel", "Tab here nul del nel"),
        ("line\u2028sep\u2029para\x0bvt\x0cff", "line sep para vt ff"),
        ("\r\nЙоэнсуу–Петрозаводск\n", "Йоэнсуу–Петрозаводск"),
        ("Анна Смирнова «ГТРК»", "Анна Смирнова «ГТРК»"),  # ordinary text is untouched
    ],
)
def test_header_text_turns_every_control_run_into_one_space(raw: str, clean: str) -> None:
    assert header_text(raw) == clean
    assert header_text(clean) == clean


def test_mailbox_encodes_the_cleaned_name_and_keeps_one_address() -> None:
    value = mailbox("Анна\r\nBcc: evil@x.example", "anna@example.org")
    assert "\r" not in value and "\n" not in value
    assert getaddresses([value]) != [] and getaddresses([value])[-1][1] == "anna@example.org"
    assert mailbox("", "anna@example.org") == "anna@example.org"


# -- contact names ----------------------------------------------------------------------------


def test_a_csv_name_with_crlf_is_imported_clean_and_delivers_to_the_contact_only(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSEXCHANGE_SECRET_KEY", "s3cret")
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    csv_file = tmp_path / "media.csv"
    # A quoted cell may span lines (RFC 4180): the CRLF is part of the name.
    csv_file.write_bytes(
        b'name,email,language\r\n"Anna\r\nBcc: evil@x.example",anna@example.org,ru\r\n'
    )
    code = main(["lists", "import", "petrozavodsk-media", str(csv_file), "--config", str(cfg.path)])
    capsys.readouterr()
    assert code == 0
    db = db_for(cfg)
    with db.session() as s:
        assert s.scalars(select(Contact.name)).all() == [f"Anna Bcc: {EVIL}"]
    did = seed_digest(db, cfg, [])

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert report.sent == 1
    msg = _assert_only_recipient(smtp_server, "anna@example.org")
    assert getaddresses([str(msg["To"])]) == [(f"Anna Bcc: {EVIL}", "anna@example.org")]


@pytest.mark.parametrize(
    "name",
    [
        INJECTED,  # plain ASCII: the fast "Name <addr>" path
        f"Анна\r\nBcc: {EVIL}",  # not ASCII: the encoded-word path
        f"Anna\nBcc: {EVIL}\u2028Cc: {EVIL}",
        "Анна " * 30 + f"\r\nBcc: {EVIL}",  # too long for one encoded-word: formataddr
    ],
)
def test_a_stored_name_with_line_breaks_still_cannot_add_a_header(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
    name: str,
) -> None:
    # A name stored before import cleaned names, or written by another tool.
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    did = seed_digest(db, cfg, [(name, "anna@example.org")])

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert report.sent == 1 and report.ok
    msg = _assert_only_recipient(smtp_server, "anna@example.org")
    shown = getaddresses([str(msg["To"])])[0][0]
    assert shown == header_text(name) and EVIL in shown  # kept as text, not as structure


# -- names from the configuration and the feeds ----------------------------------------------


def test_exchange_and_list_names_with_crlf_stay_inside_subject_and_list_id(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = _reload(
        delivery_config(write_config, smtp_port=smtp_server.port),
        {
            "name: Новости Йоэнсуу и Северной Карелии": (
                'name: "Новости\\r\\nBcc: evil@x.example\\u2028Йоэнсуу"'
            ),
            "{name: Petrozavodsk media,": '{name: "Petrozavodsk\\r\\nBcc: evil@x.example",',
        },
    )
    db = db_for(cfg)
    did = seed_digest(db, cfg, [("Анна", "anna@example.org")])

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert report.sent == 1 and report.ok
    msg = _assert_only_recipient(smtp_server, "anna@example.org")
    subject = str(msg["Subject"])
    assert subject.startswith(f"Новости Bcc: {EVIL} Йоэнсуу: ")
    assert str(msg["List-Id"]) == f"Petrozavodsk Bcc: {EVIL} <petrozavodsk-media.example.org>"


def test_the_approval_request_subject_keeps_an_exchange_name_with_crlf_on_one_line(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    from newsexchange.approval import request_approval

    cfg = _reload(
        delivery_config(write_config, smtp_port=smtp_server.port),
        {"name: Новости Йоэнсуу и Северной Карелии": 'name: "Обмен\\r\\nBcc: evil@x.example"'},
    )
    db = db_for(cfg)
    did = seed_digest(db, cfg, [("Анна", "anna@example.org")], state="draft", enqueue=False)

    assert request_approval(db, cfg, did, now=NOW) == 1

    _from, rcpts, raw = smtp_server.envelopes[0]
    assert rcpts == ["editor@example.fi"]
    msg = smtp_server.messages[0]
    assert msg["Bcc"] is None
    assert f"Обмен Bcc: {EVIL}" in str(msg["Subject"])
    lines = _raw_header_block(raw).split(b"\r\n")
    assert not [ln for ln in lines if ln.lower().startswith(b"bcc:")]


def test_an_item_title_with_crlf_changes_no_header_of_the_digest(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    did = seed_digest(db, cfg, [("Анна", "anna@example.org")])
    with db.session() as s:
        item_ids = s.scalars(select(DigestItem.item_id).where(DigestItem.digest_id == did)).all()
        for tr in s.scalars(select(Translation).where(Translation.item_id.in_(item_ids))):
            tr.title = f"Заголовок\r\nBcc: {EVIL}\r\n\r\n{tr.title}"

    report = run_send(db, cfg, now=datetime(2026, 11, 16, 8, 0, tzinfo=UTC), digest_id=did)

    assert report.sent == 1
    msg = _assert_only_recipient(smtp_server, "anna@example.org")
    text = msg.get_body(preferencelist=("plain",))
    assert text is not None and "Заголовок" in text.get_content()  # in the body, as text


def test_import_cleans_the_name_and_keeps_line_breaks_in_outlet_and_notes(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CSV's other columns keep their line breaks: only the name goes into a header.
    monkeypatch.setenv("NEWSEXCHANGE_SECRET_KEY", "s3cret")
    cfg = delivery_config(write_config, backend="outbox")
    csv_file = tmp_path / "media.csv"
    csv_file.write_bytes(
        b'name,email,outlet,notes\r\n"Boris\tB.",boris@example.org,"Radio\r\nOnego","a\r\nb"\r\n'
        # bidi override and zero-width space: a name must read as it is
        + '"\u202eАнна\u200b К.",anna@example.org,,\r\n'.encode()
    )
    assert (
        main(["lists", "import", "petrozavodsk-media", str(csv_file), "--config", str(cfg.path)])
        == 0
    )
    capsys.readouterr()
    db = db_for(cfg)
    with db.session() as s:
        c, anna = s.scalars(select(Contact).order_by(Contact.email.desc())).all()
        assert (c.name, c.outlet, c.notes) == ("Boris B.", "Radio\nOnego", "a\nb")
        assert anna.name == "Анна К."
        assert s.scalars(select(ListMembership.list_id)).all() == ["petrozavodsk-media"] * 2
