"""Email replies: the pure decision "may this reply act, and what" on real RFC 5322 bytes, and
the step that acts on them (database, outbox) including duplicates and version checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from newsexchange.approval import audit_entries, request_approval
from newsexchange.approval.inbound import (
    InboundMessage,
    ReplyCommand,
    auto_reply_reason,
    fresh_text,
    from_sendgrid,
    judge_reply,
    parse_command,
    parse_message,
    process_inbound,
)
from newsexchange.approval.tokens import editor_reply_token, reply_token
from newsexchange.config import Config
from newsexchange.db import Database, Delivery, Digest
from tests.test_approval import (
    ANNA,
    BORIS,
    NOW,
    approval_config,
    clear_outbox,
    make_digest,
    outbox_messages,
    state_of,
)

TOKEN = "k5v7q2m9x3c8b1n4z6l0p2r5t7y9w3e8"  # the digest's token
KEY = "test-secret"  # NEWSEXCHANGE_SECRET_KEY in tests/conftest.py
EDITORS = (ANNA, BORIS)
#: The receiving server's authserv-id (mail.imap.authserv_id in the step tests' config).
AUTHSERV = "mx.example.org"
MAIL_WITH_IMAP = (
    'mail:\n  backend: outbox\n  from: "Exchange <news@example.org>"\n'
    f"  outbox_dir: var/outbox\n  imap: {{host: 127.0.0.1, authserv_id: {AUTHSERV}}}\n"
)


def tok(editor: str = ANNA, digest_token: str = TOKEN) -> str:
    """An editor's own reply token for the pure tests' digest."""
    return editor_reply_token(KEY, digest_token, editor)


def aligned_auth(sender: str) -> str:
    """What the operator's receiving server writes for a reply it verified: DKIM and SPF
    passing for the sender's own domain."""
    domain = sender.rpartition("@")[2]
    return (
        f"Authentication-Results: {AUTHSERV};\r\n"
        f"\tdkim=pass (2048-bit key) header.d={domain} header.s=sel1;\r\n"
        f"\tspf=pass smtp.mailfrom={sender}\r\n"
    )


def raw_reply(
    body: str,
    *,
    sender: str = ANNA,
    to: str | None = None,
    subject: str | None = None,
    extra: str = "",
    message_id: str = "<reply-1@example.fi>",
    auth: str | None = None,
) -> bytes:
    """A reply as a mail client writes it (CRLF, encoded headers, UTF-8 body), as the
    operator's receiving server delivers it: with its Authentication-Results on top (by
    default DKIM and SPF passing for the sender's domain; ``auth=""`` for none)."""
    to = to if to is not None else f"news+{tok(sender)}.v1@example.org"
    subject = subject if subject is not None else f"Re: Approval needed: Новости [nx:{tok(sender)}]"
    head = (
        (aligned_auth(sender) if auth is None else auth) + f"Return-Path: <{sender}>\r\n"
        f"From: Anna Editor <{sender}>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 16 Nov 2026 10:00:00 +0200\r\n"
        f"Message-ID: {message_id}\r\n"
        "In-Reply-To: <nx-approval.1.v1.abcdef0123456789@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        f"{extra}"
        "\r\n"
    )
    return head.encode() + body.replace("\n", "\r\n").encode("utf-8")


def judge_msg(msg: InboundMessage, *, version: int = 1) -> tuple[bool, str, ReplyCommand | None]:
    v = judge_reply(
        msg,
        editor_tokens={e: tok(e) for e in EDITORS},
        digest_version=version,
        local="news",
        domain="example.org",
        authserv_id=AUTHSERV,
    )
    return v.act, v.reason, v.command


def judge(raw: bytes, *, version: int = 1) -> tuple[bool, str, ReplyCommand | None]:
    return judge_msg(parse_message(raw), version=version)


# -- the pure decision ------------------------------------------------------------------------


def test_approve_from_an_editor_with_the_plus_address_acts() -> None:
    act, _reason, cmd = judge(raw_reply("APPROVE\n\n-- \nAnna\n"))
    assert act and cmd == ReplyCommand("approve")


def test_subject_tag_alone_is_enough_token() -> None:
    act, _, cmd = judge(raw_reply("Approve.\n", to="news@example.org"))
    assert act and cmd == ReplyCommand("approve")


def test_reply_from_a_non_editor_is_ignored() -> None:
    act, reason, _ = judge(raw_reply("APPROVE\n", sender="mallory@example.com"))
    assert not act and "not an editor" in reason


def test_each_editor_has_their_own_token() -> None:
    assert tok(ANNA) != tok(BORIS) and tok(ANNA)[:16] == tok(BORIS)[:16] == TOKEN[:16]
    # Boris, authenticated as himself, replying with Anna's token does nothing.
    act, reason, _ = judge(
        raw_reply(
            "APPROVE\n",
            sender=BORIS,
            to=f"news+{tok(ANNA)}.v1@example.org",
            subject=f"Re: [nx:{tok(ANNA)}]",
        )
    )
    assert not act and "token of anna@example.fi" in reason
    # The digest's own token (shared, never mailed since per-editor tokens) is nobody's.
    act, reason, _ = judge(
        raw_reply("APPROVE\n", to=f"news+{TOKEN}.v1@example.org", subject=f"Re: [nx:{TOKEN}]")
    )
    assert not act and "token" in reason


def test_reply_from_an_editor_without_the_token_is_ignored() -> None:
    act, reason, _ = judge(raw_reply("APPROVE\n", to="news@example.org", subject="Re: the digest"))
    assert not act and "token" in reason


def test_wrong_token_is_ignored() -> None:
    other = "a" * 32
    act, reason, _ = judge(
        raw_reply("APPROVE\n", to=f"news+{other}@example.org", subject=f"[nx:{other}]")
    )
    assert not act and "token" in reason


def test_out_of_office_reply_is_never_acted_on() -> None:
    ooo = raw_reply(
        "APPROVE\nI am out of office until Monday.\n",
        subject=f"Automatic reply: Approval needed [nx:{TOKEN}]",
        extra="Auto-Submitted: auto-replied\r\nX-Autoreply: yes\r\n",
    )
    act, reason, _ = judge(ooo)
    assert not act and "automatic" in reason
    # Each signal on its own is enough.
    for extra, subject in [
        ("Auto-Submitted: auto-replied\r\n", f"Re: [nx:{TOKEN}]"),
        ("Precedence: bulk\r\n", f"Re: [nx:{TOKEN}]"),
        ("X-Autoreply: yes\r\n", f"Re: [nx:{TOKEN}]"),
        ("", f"Out of Office: Approval needed [nx:{TOKEN}]"),
        ("", f"Автоответ: [nx:{TOKEN}]"),
    ]:
        assert auto_reply_reason(parse_message(raw_reply("APPROVE", extra=extra, subject=subject)))


def test_auto_submitted_no_is_a_person() -> None:
    act, _, _ = judge(raw_reply("APPROVE\n", extra="Auto-Submitted: no\r\n"))
    assert act


def test_bounce_is_never_acted_on() -> None:
    bounce = (
        b"Return-Path: <>\r\nFrom: Mail Delivery System <MAILER-DAEMON@example.fi>\r\n"
        b"To: news+" + TOKEN.encode() + b".v1@example.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nAPPROVE\r\n--b--\r\n"
    )
    msg = parse_message(bounce)
    assert auto_reply_reason(msg)
    assert not judge(bounce)[0]


def test_approve_inside_quoted_text_is_not_a_command() -> None:
    quoted = (
        "Thanks, I will look at it tomorrow.\n\n"
        "On Mon, 16 Nov 2026 at 10:00, Exchange <news@example.org> wrote:\n"
        "> Reply with APPROVE on the first line\n"
        "> APPROVE\n"
    )
    act, reason, _ = judge(raw_reply(quoted))
    assert not act and "no command" in reason
    only_quote = "> APPROVE\n> REJECT\n"
    assert not judge(raw_reply(only_quote))[0]
    outlook = (
        "\n\n-----Original Message-----\nFrom: Exchange <news@example.org>\n"
        "Sent: Monday, November 16, 2026 10:00\nSubject: Approval needed\n\nAPPROVE\n"
    )
    assert not judge(raw_reply(outlook))[0]
    outlook_block = (
        "\n________________________________\nFrom: Exchange <news@example.org>\n"
        "Sent: Monday\nTo: Anna\n\nAPPROVE\n"
    )
    assert not judge(raw_reply(outlook_block))[0]


def test_command_above_the_quote_acts() -> None:
    body = (
        "APPROVE\n\nOn Mon, 16 Nov 2026 at 10:00, Exchange <news@example.org>\nwrote:\n> REJECT\n"
    )
    act, _, cmd = judge(raw_reply(body))
    assert act and cmd == ReplyCommand("approve")


def test_parse_commands() -> None:
    assert parse_command("\n\n  approve  \n") == ReplyCommand("approve")
    assert parse_command("HYVÄKSYN") == ReplyCommand("approve")
    assert parse_command("Одобряю!") == ReplyCommand("approve")
    assert parse_command("Approve? I am not sure about item 3") is None
    assert parse_command("REJECT duplicates last issue\nsee item 2") == ReplyCommand(
        "reject", reason="duplicates last issue\nsee item 2"
    )
    assert parse_command("DROP 3, 7") == ReplyCommand("drop", positions=(3, 7))
    assert parse_command("drop 2-4 and 9.") == ReplyCommand("drop", positions=(2, 3, 4, 9))
    assert parse_command("DROP the boring ones") is None
    assert parse_command("Hello") is None
    assert fresh_text("ok\n-- \nsig APPROVE") == "ok"


def test_reply_to_an_older_version_does_not_act() -> None:
    act, reason, cmd = judge(raw_reply("DROP 2\n"), version=2)
    assert not act and "version" in reason and cmd == ReplyCommand("drop", positions=(2,))


def test_dmarc_failure_is_refused() -> None:
    forged = raw_reply(
        "APPROVE\n",
        extra="Authentication-Results: mx.example.org; dmarc=fail header.from=example.fi\r\n",
    )
    act, reason, _ = judge(forged)
    assert not act and "could not be verified" in reason and "DMARC failed" in reason


def test_sendgrid_parsed_fields_become_the_same_message() -> None:
    msg = from_sendgrid(
        {
            "from": f"Anna <{ANNA}>",
            "to": f"news+{tok()}.v1@example.org",
            "subject": f"Re: [nx:{tok()}]",
            "text": "APPROVE\n\n> quoted\n",
            "headers": f"From: Anna <{ANNA}>\nMessage-ID: <sg-1@example.fi>\n",
            "envelope": '{"to": ["news+' + tok() + '.v1@example.org"], "from": "' + ANNA + '"}',
            "SPF": "pass",
        }
    )
    assert isinstance(msg, InboundMessage) and msg.message_id == "<sg-1@example.fi>"
    assert judge_msg(msg)[0]


# -- the step ----------------------------------------------------------------------------------


@pytest.fixture
def cfg(write_config: Callable[..., Config]) -> Config:
    return approval_config(write_config, required=1, mail=MAIL_WITH_IMAP)


@pytest.fixture
def db(cfg: Config, db_for: Callable[[Config], Database]) -> Database:
    return db_for(cfg)


def _token(cfg: Config, db: Database, digest_id: int, editor: str = ANNA) -> str:
    """The editor's own reply token for the digest, as their request carried it."""
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        return reply_token(cfg, d, editor)


def test_reply_approve_acts_once_and_acknowledges(cfg: Config, db: Database) -> None:
    digest_id = make_digest(db)
    request_approval(db, cfg, digest_id, now=NOW)
    request = next(m for m in outbox_messages(cfg) if m["To"] == ANNA)
    clear_outbox(cfg)
    body = request.get_body(preferencelist=("plain",))
    assert body is not None
    quoted = "\n".join("> " + ln for ln in body.get_content().splitlines())
    reply = raw_reply(
        "APPROVE\n\nOn Mon, 16 Nov 2026 at 10:00, Exchange <news@example.org> wrote:\n" + quoted,
        to=str(request["Reply-To"]),
        subject="Re: " + str(request["Subject"]),
    )
    first = process_inbound(db, cfg, parse_message(reply), now=NOW, via="imap")
    assert first.status == "acted", first.reason
    assert state_of(db, digest_id) == "approved"
    again = process_inbound(db, cfg, parse_message(reply), now=NOW, via="imap")
    assert again.status == "duplicate"
    acks = outbox_messages(cfg)
    assert [m["To"] for m in acks] == [ANNA] and acks[0]["Subject"].startswith("Done")
    assert acks[0]["Auto-Submitted"] == "auto-replied"
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0  # the send step's
        log = audit_entries(s, digest_id)
    approved = next(e for e in log if e["action"] == "approved")
    assert approved["detail"]["deliveries"] == 3  # counted once, for the one approval
    approve = next(e for e in log if e["action"] == "approve")
    assert approve["channel"] == "email" and approve["address"] == ANNA


def test_reply_from_non_editor_and_out_of_office_change_nothing(cfg: Config, db: Database) -> None:
    digest_id = make_digest(db)
    request_approval(db, cfg, digest_id, now=NOW)
    clear_outbox(cfg)
    token = _token(cfg, db, digest_id)
    to = f"news+{token}.v1@example.org"
    stranger = raw_reply("APPROVE\n", sender="mallory@example.com", to=to, message_id="<m1@x>")
    ooo = raw_reply(
        "APPROVE\n",
        to=to,
        subject=f"Out of office [nx:{token}]",
        message_id="<m2@x>",
        extra="Auto-Submitted: auto-replied\r\n",
    )
    no_token = raw_reply(
        "APPROVE\n", to="news@example.org", subject="Re: digest", message_id="<m3@x>"
    )
    results = [
        process_inbound(db, cfg, parse_message(r), now=NOW, via="sendgrid")
        for r in (stranger, ooo, no_token)
    ]
    assert [r.status for r in results] == ["ignored", "ignored", "ignored"]
    assert state_of(db, digest_id) == "awaiting_approval"
    assert outbox_messages(cfg) == []  # no mail to strangers or to auto-responders
    with db.session() as s:
        ignored = [e for e in audit_entries(s, digest_id) if e["action"] == "reply_ignored"]
    assert {e["address"] for e in ignored} == {"mallory@example.com", ANNA}


def test_reply_drop_rebuilds_as_new_version_and_mails_fresh_requests(
    cfg: Config, db: Database
) -> None:
    digest_id = make_digest(db, items=4)
    request_approval(db, cfg, digest_id, now=NOW)
    clear_outbox(cfg)
    token = _token(cfg, db, digest_id)
    reply = raw_reply("DROP 2, 3\n", to=f"news+{token}.v1@example.org")
    result = process_inbound(
        db, cfg, parse_message(reply), now=NOW + timedelta(minutes=5), via="imap"
    )
    assert result.status == "acted", result.reason
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        assert d.version == 2 and d.state == "awaiting_approval"
        assert [e.item.title for e in d.entries if e.included] == ["Uutinen 1", "Uutinen 4"]
    mails = outbox_messages(cfg)
    fresh = [m for m in mails if m["Subject"].startswith("Changed")]
    assert sorted(m["To"] for m in fresh) == [ANNA, BORIS]
    assert fresh[0]["Reply-To"] == f"news+{token}.v2@example.org"
    # A late APPROVE answering version 1 must not approve version 2.
    late = raw_reply("APPROVE\n", to=f"news+{token}.v1@example.org", message_id="<late@x>")
    stale = process_inbound(
        db, cfg, parse_message(late), now=NOW + timedelta(minutes=6), via="imap"
    )
    assert stale.status == "ignored" and "version" in stale.reason
    assert state_of(db, digest_id) == "awaiting_approval"


def test_sendgrid_raw_mime_mode_and_envelope_carry_the_token() -> None:
    raw = raw_reply("APPROVE\n", to="news@example.org", subject="Re: digest", auth="")
    msg = from_sendgrid(
        {
            "email": raw.decode("utf-8"),
            "envelope": '{"to": ["news+' + tok() + '.v1@example.org"], "from": "' + ANNA + '"}',
            "dkim": "{@example.fi : pass}",
        }
    )
    assert f"news+{tok()}.v1@example.org" in msg.recipients
    assert judge_msg(msg)[0]


def test_html_only_reply_ignores_the_blockquote() -> None:
    def html_reply(html: str) -> bytes:
        return raw_reply("").replace(b"text/plain", b"text/html") + html.encode()

    quoted = "<div>Looks fine, later</div><blockquote><p>APPROVE</p></blockquote>"
    assert not judge(html_reply(quoted))[0]
    fresh = "<div>APPROVE<br></div><blockquote><p>REJECT</p></blockquote>"
    act, _, cmd = judge(html_reply(fresh))
    assert act and cmd == ReplyCommand("approve")
