"""Subject and From read back the same in every decoder, spaces kept at every fold point.

Three decoders: Python's email with compat32 (``decode_header`` + ``make_header``), with
``email.policy.default`` (its own parsers for unstructured and address headers), and
fast-mail-parser, a compiled parser of its own. Each subject and display name is tried at
many lengths, so that a fold falls at every position of the text; then a real digest and a
real approval request are read back as aiosmtpd received them."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import parseaddr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.delivery.send import _to_header, run_send
from newsexchange.mail.headers import POLICY
from tests.servers import SMTPServer
from tests.test_delivery_support import NOW, delivery_config, seed_digest

try:  # the non-Python parser: a dev dependency (fast-mail-parser); its own test says if absent
    import fast_mail_parser
except ImportError:  # pragma: no cover - depends on the environment
    fast_mail_parser = None

SUBJECTS = [
    "Hyväksyttävänä: Новости Йоэнсуу и Северной Карелии: 1–15 ноября 2026 [nx:abcdefgh1234]",
    "Approval requested: Pohjois-Karjalan ja Joensuun uutiset: 1.–15. marraskuuta 2026",
    "Karjalan uutiset  ja Пётр и Павел — kaksi  välilyöntiä: 16.–30. marraskuuta 2026",
]
NAMES = [
    "Новости обмена Йоэнсуу и Петрозаводск",
    "Joensuun ja Petroskoin uutisvaihto – Pohjois-Karjala",
    "Орлов, Дмитрий «ГТРК Карелия»",
]


def _decoders(raw: bytes, header: str) -> dict[str, str]:
    compat = email.message_from_bytes(raw, policy=email.policy.compat32)[header]
    default = email.message_from_bytes(raw, policy=email.policy.default)[header]
    other = fast_mail_parser.parse_email(raw) if fast_mail_parser is not None else None
    if header == "Subject":
        got = {"compat32": str(make_header(decode_header(compat))), "default": str(default)}
        if other is not None:
            got["fast-mail-parser"] = other.subject
        return got
    # compat32's way: split the address first, then decode the display name.
    got = {
        "compat32": str(make_header(decode_header(parseaddr(compat)[0]))),
        "default": default.addresses[0].display_name,
    }
    if other is not None:
        got["fast-mail-parser"] = other.from_.display_name
    return got


def _message(subject: str, from_: str) -> bytes:
    msg = EmailMessage(policy=POLICY)
    msg["From"] = from_
    msg["To"] = "anna@example.org"
    msg["Subject"] = subject
    msg.set_content("hei")
    raw = msg.as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and all(len(line) <= 998 for line in head.split(b"\r\n"))
    return raw


@pytest.mark.parametrize("base", SUBJECTS)
def test_a_subject_reads_back_the_same_in_every_decoder_at_every_length(base: str) -> None:
    for n in range(0, 70):
        subject = ("x" * n + " " if n else "") + base
        raw = _message(subject, "news@example.org")
        assert b"\r\n " in raw.split(b"\r\n\r\n", 1)[0]  # it was folded
        got = _decoders(raw, "Subject")
        assert got == dict.fromkeys(got, subject), (n, raw.split(b"\r\n\r\n", 1)[0])


@pytest.mark.parametrize("base", NAMES)
def test_a_sender_name_reads_back_the_same_in_every_decoder_at_every_length(base: str) -> None:
    for n in range(0, 50):
        name = ("x" * n + " " if n else "") + base
        for from_ in (f'"{name}" <news@example.org>', _to_header(name, "news@example.org")):
            raw = _message("Hei", from_)
            got = _decoders(raw, "From")
            assert got == dict.fromkeys(got, name), (n, raw.split(b"\r\n\r\n", 1)[0])


def test_the_digest_as_received_keeps_the_subject_and_names(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    long_name = "Александра Константиновна Верещагина-Преображенская"
    did = seed_digest(db, cfg, [(long_name, "anna@example.org")])

    assert run_send(db, cfg, now=NOW, digest_id=did).sent == 1

    raw = smtp_server.envelopes[0][2]
    subject = _decoders(raw, "Subject")
    assert set(subject.values()) == {str(smtp_server.messages[0]["Subject"])}
    assert "Новости Йоэнсуу и Северной Карелии" in subject["compat32"]
    default = email.message_from_bytes(raw, policy=email.policy.default)
    assert default["To"].addresses[0].display_name == long_name
    if fast_mail_parser is not None:
        other = fast_mail_parser.parse_email(raw)
        assert [a.display_name for a in other.to] == [long_name]


def test_the_approval_request_as_received_keeps_every_space(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    from newsexchange.approval import request_approval

    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    did = seed_digest(db, cfg, [("Анна", "anna@example.org")], state="draft", enqueue=False)

    assert request_approval(db, cfg, did, now=NOW) == 1

    raw = smtp_server.envelopes[0][2]
    got = _decoders(raw, "Subject")
    assert len(set(got.values())) == 1, got
    assert "Новости Йоэнсуу и Северной Карелии" in got["default"]
    assert "  " not in got["default"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abc XYZ äöå йжЁ –:,.-[]=?\"'", min_size=1, max_size=160))
def test_any_subject_of_latin_and_cyrillic_reads_back_the_same(text: str) -> None:
    subject = " ".join(text.split(" ")).strip(" ")
    if not subject:
        return
    raw = _message(subject, "news@example.org")
    got = _decoders(raw, "Subject")
    assert got == dict.fromkeys(got, subject), raw.split(b"\r\n\r\n", 1)[0]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abc XYZ äöå йжЁ –:,.-=?\"'()", min_size=1, max_size=120))
def test_any_sender_name_reads_back_the_same(text: str) -> None:
    name = " ".join(text.split()).strip()
    if not name:
        return
    raw = _message("Hei", _to_header(name, "news@example.org"))
    got = _decoders(raw, "From")
    assert got == dict.fromkeys(got, name), raw.split(b"\r\n\r\n", 1)[0]


def test_the_second_parser_is_there() -> None:
    """The tests above decode with fast-mail-parser too when it is installed."""
    if fast_mail_parser is None:
        pytest.skip("fast-mail-parser is not installed: subjects checked with Python's email only")
    raw = _message("Новости Йоэнсуу и Северной Карелии " * 3, "Анна Смирнова <a@example.org>")
    assert len(_decoders(raw, "Subject")) == 3
