"""Approval decisions, edits, requests/reminders/deadlines and the console commands, on a real
database and the real mail path (the outbox backend writes .eml files we read back).

The helpers here (``approval_config``, ``make_digest``, ``outbox_messages``) are reused by
the other ``test_approval_*`` modules."""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from unittest import mock

import pytest
from sqlalchemy import func, select

from newsexchange.approval import audit_entries, decide, request_approval, run_approvals
from newsexchange.approval.decide import apply_edit, approvers
from newsexchange.approval.notices import queue_notes
from newsexchange.approval.tokens import new_reply_token, reply_token
from newsexchange.config import Config
from newsexchange.db import (
    Approval,
    Contact,
    Database,
    Delivery,
    Digest,
    DigestItem,
    Item,
    ListMembership,
    Source,
    Translation,
)
from newsexchange.errors import ApprovalError
from newsexchange.mail.queue import flush

NOW = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
ANNA = "anna@example.fi"
BORIS = "boris@example.ru"

EXCHANGE = """\
sources:
  - {{id: jns, region: joensuu, url: "https://example.fi/rss", language: fi}}
lists:
  ptz-media: {{language: ru}}
exchanges:
  - id: jns-to-ptz
    name: Joensuu news
    from: [joensuu]
    to: petrozavodsk
    language: ru
    editors: [{editors}]
    approvals_required: {required}
    lists: [ptz-media]
"""


def approval_config(
    write_config: Callable[..., Config],
    *,
    editors: tuple[str, ...] = (ANNA, BORIS),
    required: int = 1,
    public_url: str = "http://127.0.0.1:8080",
    mail: str = "",
    env: dict[str, str] | None = None,
) -> Config:
    from tests.conftest import BASE_CONFIG

    base = BASE_CONFIG.replace("public_url: http://127.0.0.1:8080", f"public_url: {public_url}")
    if mail:
        base = base.replace(
            'mail:\n  backend: outbox\n  from: "Exchange <news@example.org>"\n'
            "  outbox_dir: var/outbox\n",
            mail,
        )
    # Editors read English here unless a test gives {email, language} itself (a bare address
    # would read the source region's language, Finnish: issue 11).
    entries = [
        e if e.lstrip().startswith("{") else f"{{email: {e}, language: en}}" for e in editors
    ]
    extra = EXCHANGE.format(editors=", ".join(entries), required=required)
    return write_config(extra, base=base, env=env)


def make_digest(db: Database, *, items: int = 4, contacts: int = 3, now: datetime = NOW) -> int:
    """A digest of ``items`` Finnish items with done Russian translations, awaiting approval
    nothing yet (state draft), and ``contacts`` recipients on the exchange's list."""
    with db.session() as s:
        if s.get(Source, "jns") is None:
            s.add(
                Source(id="jns", config_url="https://example.fi/rss", url="https://example.fi/rss")
            )
        digest = Digest(
            exchange_id="jns-to-ptz",
            period_start=date(2026, 11, 1),
            period_end=date(2026, 11, 15),
            language="ru",
            state="draft",
            version=1,
            token=new_reply_token(),
            created_at=now,
            built_at=now,
        )
        s.add(digest)
        s.flush()
        for i in range(1, items + 1):
            item = Item(
                source_id="jns",
                identity=f"{digest.id}-{i}",
                link=f"https://example.fi/news/{i}",
                title=f"Uutinen {i}",
                summary_text=f"Tiivistelmä {i}",
                summary_html=f"<p>Tiivistelmä {i}</p>",
                region="joensuu",
                language="fi",
                published_at=now - timedelta(days=i),
                content_hash=f"h{i}",
            )
            s.add(item)
            s.flush()
            s.add(
                Translation(
                    item_id=item.id,
                    language="ru",
                    title=f"Новость {i}",
                    summary_text=f"Резюме {i}",
                    summary_html=f"<p>Резюме {i}</p>",
                    provider="libre",
                    status="done",
                )
            )
            s.add(DigestItem(digest_id=digest.id, item_id=item.id, position=i, section="news"))
        for c in range(contacts):
            contact = Contact(email=f"journalist{c}@example.ru", name=f"J {c}")
            s.add(contact)
            s.flush()
            s.add(ListMembership(contact_id=contact.id, list_id="ptz-media"))
        return digest.id


def outbox_messages(config: Config) -> list[EmailMessage]:
    folder = config.resolve(config.mail.outbox_dir)
    out = []
    for p in sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
        msg = email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


def clear_outbox(config: Config) -> None:
    for p in config.resolve(config.mail.outbox_dir).glob("*.eml"):
        p.unlink()


def links_in(msg: EmailMessage) -> dict[str, str]:
    """The action links in the HTML part, by button text, as an editor's mail client shows."""
    from bs4 import BeautifulSoup

    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    soup = BeautifulSoup(part.get_content(), "lxml")
    out: dict[str, str] = {}
    for a in soup.find_all("a"):
        text = a.get_text(" ", strip=True)
        if text in ("Approve", "Request changes", "Reject", "Open the review page"):
            out[text] = str(a["href"])
    return out


def state_of(db: Database, digest_id: int) -> str:
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        return d.state


@pytest.fixture
def cfg(write_config: Callable[..., Config]) -> Config:
    return approval_config(write_config)


@pytest.fixture
def db(cfg: Config, db_for: Callable[[Config], Database]) -> Database:
    return db_for(cfg)


# -- decisions ------------------------------------------------------------------------------


def test_one_approval_freezes_content_and_enqueues_every_recipient(
    cfg: Config, db: Database
) -> None:
    digest_id = make_digest(db, contacts=3)
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        result = decide(
            s,
            cfg,
            d,
            editor=ANNA.upper(),
            decision="approve",
            channel="cli",
            address="x@host",
            now=NOW,
        )
    assert result.state == "approved" and result.enqueued == 3
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        assert d.state == "approved" and d.approved_at == NOW
        assert d.frozen is not None and [i["title"] for i in d.frozen["items"]] == [
            "Новость 1",
            "Новость 2",
            "Новость 3",
            "Новость 4",
        ]
        assert d.content_hash and len(d.content_hash) == 64
        # Counted, not queued: the rows are the send step's (issue 13: off the request).
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0
        log = audit_entries(s, digest_id)
    assert [(e["actor"], e["action"], e["channel"]) for e in log] == [
        (ANNA, "approve", "cli"),
        ("newsexchange", "approved", "system"),
    ]
    assert log[0]["address"] == "x@host"
    assert log[1]["detail"]["deliveries"] == 3
    from newsexchange.delivery.shards import plan_shards

    assert sum(sh.open for sh in plan_shards(db, cfg, now=NOW)) == 3  # every recipient
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 3


def test_two_editors_required_one_approval_is_not_enough(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    cfg = approval_config(write_config, required=2)
    db = db_for(cfg)
    digest_id = make_digest(db)
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        first = decide(
            s, cfg, d, editor=ANNA, decision="approve", channel="web", address=None, now=NOW
        )
        again = decide(
            s, cfg, d, editor=ANNA, decision="approve", channel="email", address=None, now=NOW
        )
    assert first.state == "awaiting_approval" and first.approved_by == [ANNA]
    assert again.repeated and again.approved_by == [ANNA]
    assert state_of(db, digest_id) == "awaiting_approval"
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0
        d = s.get(Digest, digest_id)
        assert d is not None
        second = decide(
            s, cfg, d, editor=BORIS, decision="approve", channel="web", address=None, now=NOW
        )
    assert second.state == "approved" and second.approved_by == [ANNA, BORIS]


def test_edit_voids_earlier_approval(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    cfg = approval_config(write_config, required=2)
    db = db_for(cfg)
    digest_id = make_digest(db)
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        decide(s, cfg, d, editor=ANNA, decision="approve", channel="web", address=None, now=NOW)
        assert approvers(s, d) == [ANNA]
        changed = apply_edit(
            s, cfg, d, editor=BORIS, channel="web", address=None, now=NOW, drop=[2]
        )
        assert changed and d.version == 2
        assert approvers(s, d) == []  # Anna approved version 1, which no longer exists
        r = decide(
            s, cfg, d, editor=BORIS, decision="approve", channel="web", address=None, now=NOW
        )
        assert r.state == "awaiting_approval" and r.approved_by == [BORIS]
    with db.session() as s:
        versions = s.scalars(select(Approval.digest_version).order_by(Approval.id)).all()
    assert versions == [1, 2]


def test_non_editor_cannot_decide_and_the_attempt_is_logged(cfg: Config, db: Database) -> None:
    digest_id = make_digest(db)
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        with pytest.raises(ApprovalError, match="not an editor"):
            decide(
                s,
                cfg,
                d,
                editor="mallory@example.com",
                decision="approve",
                channel="web",
                address="203.0.113.9",
                now=NOW,
            )
        s.commit()
        assert [e["action"] for e in audit_entries(s, digest_id)] == ["approve_refused"]
    assert state_of(db, digest_id) == "draft"


def test_rejected_digest_takes_no_further_decisions(cfg: Config, db: Database) -> None:
    digest_id = make_digest(db)
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        rejected = decide(
            s,
            cfg,
            d,
            editor=BORIS,
            decision="reject",
            channel="cli",
            address=None,
            comment="outdated",
            now=NOW,
        )
        # Issue 12: decide sends nothing; its caller queues the notes it asks for, and the
        # queue sends them after the commit.
        queue_notes(s, cfg, d, rejected.notes, now=NOW)
        # Issue 11: a rejection is not final; the digest is a draft of the next version,
        # which takes no decisions until an editor sends it for approval.
        assert d.state == "revising" and d.version == 2
        with pytest.raises(ApprovalError, match="draft being revised"):
            decide(s, cfg, d, editor=ANNA, decision="approve", channel="cli", address=None, now=NOW)
        assert d.decided_reason == "outdated"
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0
    flush(db, cfg, now=NOW)
    notes = outbox_messages(cfg)  # the other editor is told, with the reason
    assert [m["To"] for m in notes] == [ANNA] and "rejected" in notes[0]["Subject"]
    body = notes[0].get_body(preferencelist=("plain",))
    assert body is not None and "outdated" in body.get_content()


# -- requests, reminders, deadlines ------------------------------------------------------------


def test_request_mails_each_editor_their_own_links_and_reply_address(
    cfg: Config, db: Database
) -> None:
    digest_id = make_digest(db)
    assert request_approval(db, cfg, digest_id, now=NOW) == 2
    msgs = outbox_messages(cfg)
    assert sorted(m["To"] for m in msgs) == [ANNA, BORIS]
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None and d.state == "awaiting_approval"
        token, b_token = reply_token(cfg, d, ANNA), reply_token(cfg, d, BORIS)
    anna = next(m for m in msgs if m["To"] == ANNA)
    boris = next(m for m in msgs if m["To"] == BORIS)
    # Each editor's own reply token: a reply acts only for the editor it was mailed to.
    assert token != b_token and token[:16] == d.token[:16]
    assert f"[nx:{token}]" in anna["Subject"] and f"[nx:{b_token}]" in boris["Subject"]
    assert anna["Reply-To"] == f"news+{token}.v1@example.org"
    assert boris["Reply-To"] == f"news+{b_token}.v1@example.org"
    assert anna["Auto-Submitted"] == "auto-generated"
    a_links, b_links = links_in(anna), links_in(boris)
    assert set(a_links) == {"Approve", "Request changes", "Reject", "Open the review page"}
    assert a_links["Approve"] != b_links["Approve"]  # each editor's own signed link
    # The digest itself is in the mail, as recipients will see it, items numbered for DROP.
    text = anna.get_body(preferencelist=("plain",))
    assert text is not None
    body = text.get_content()
    assert "Новость 3" in body and "  3. Новость 3" in body and "APPROVE" in body
    # "View in browser" of the unapproved digest opens the editor's review page instead.
    assert "/digests/" not in body and body.count(a_links["Open the review page"]) >= 2


def test_run_approvals_requests_reminds_then_holds_and_tells_operators(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    mail = (
        'mail:\n  backend: outbox\n  from: "Exchange <news@example.org>"\n'
        "  outbox_dir: var/outbox\n  operators: [ops@example.org]\n"
    )
    cfg = approval_config(write_config, mail=mail, required=2)
    db = db_for(cfg)
    digest_id = make_digest(db)
    first = run_approvals(db, cfg, now=NOW)
    assert first.requested == [digest_id] and len(outbox_messages(cfg)) == 2
    assert run_approvals(db, cfg, now=NOW + timedelta(hours=1)).to_json()["requested"] == []
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        decide(s, cfg, d, editor=ANNA, decision="approve", channel="web", address=None, now=NOW)
    clear_outbox(cfg)
    later = run_approvals(db, cfg, now=NOW + timedelta(hours=49))
    assert later.reminded == [digest_id]
    reminders = outbox_messages(cfg)
    assert [m["To"] for m in reminders] == [BORIS]  # Anna has answered
    assert reminders[0]["Subject"].startswith("Reminder:")
    assert run_approvals(db, cfg, now=NOW + timedelta(hours=50)).reminded == []  # once
    clear_outbox(cfg)
    end = run_approvals(db, cfg, now=NOW + timedelta(hours=121))
    assert end.held == [digest_id]
    assert state_of(db, digest_id) == "held"
    ops = outbox_messages(cfg)
    assert [m["To"] for m in ops] == ["ops@example.org"] and "held" in ops[0]["Subject"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0  # never sent unapproved
        actions = [e["action"] for e in audit_entries(s, digest_id)]
    assert actions == ["approval_requested", "approve", "reminder_sent", "deadline_held"]


def test_run_approvals_asks_again_when_a_rebuild_changed_the_version(
    cfg: Config, db: Database
) -> None:
    digest_id = make_digest(db)
    run_approvals(db, cfg, now=NOW)
    clear_outbox(cfg)
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        d.version += 1  # what a rebuild does when a translation finished meanwhile
    report = run_approvals(db, cfg, now=NOW + timedelta(hours=1))
    assert report.requested == [digest_id]
    mails = outbox_messages(cfg)
    assert len(mails) == 2 and all(m["Subject"].startswith("Changed") for m in mails)
    assert all(".v2@" in str(m["Reply-To"]) for m in mails)
    assert run_approvals(db, cfg, now=NOW + timedelta(hours=2)).requested == []


# -- console --------------------------------------------------------------------------------


def _cli(cfg: Config, *args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point, in a child process."""
    assert cfg.path is not None
    return subprocess.run(
        [sys.executable, "-m", "newsexchange", *args, "--config", str(cfg.path)],
        capture_output=True,
        text=True,
        env={"NEWSEXCHANGE_SECRET_KEY": "test-secret", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )


def run_cli(cfg: Config, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``newsexchange ARGS --config …`` in this process (faster): exit code and stdout."""
    from newsexchange.cli import main

    assert cfg.path is not None
    out = io.StringIO()
    environ = {"NEWSEXCHANGE_SECRET_KEY": "test-secret", **(env or {})}
    with (
        mock.patch.dict(os.environ, environ),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        try:
            code = main([*args, "--config", str(cfg.path)])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, out.getvalue()


def test_cli_approve_needs_as_with_two_editors_then_approves(cfg: Config, db: Database) -> None:
    digest_id = make_digest(db)
    code, out = run_cli(cfg, "approve", str(digest_id), "--json")
    assert code == 2 and "--as" in json.loads(out)["error"]
    code, out = run_cli(cfg, "approve", str(digest_id), "--as", BORIS, "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["state"] == "approved" and data["channel"] == "cli" and data["enqueued"] == 3
    with db.session() as s:
        entry = audit_entries(s, digest_id)[0]
    assert entry["actor"] == BORIS and entry["channel"] == "cli" and "@" in entry["address"]
    code, out = run_cli(cfg, "reject", str(digest_id), "--reason", "late", "--as", ANNA, "--json")
    assert code == 1 and "already approved" in json.loads(out)["error"]


def test_cli_reject_records_reason(cfg: Config, db: Database) -> None:
    digest_id = make_digest(db)
    out = _cli(cfg, "reject", str(digest_id), "--reason", "duplicate of last issue", "--as", ANNA)
    assert out.returncode == 0, out.stderr
    assert "rejected" in out.stdout
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None and d.state == "revising" and d.version == 2  # issue 11
        assert d.decided_reason == "duplicate of last issue"


def test_cli_approvals_run_json(cfg: Config, db: Database) -> None:
    digest_id = make_digest(db)
    code, out = run_cli(cfg, "approvals", "run", "--json")
    assert code == 0, out
    assert json.loads(out)["requested"] == [digest_id]


def test_two_editors_approving_at_the_same_moment_approve_the_digest(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database], any_db_url: str
) -> None:
    """Each sees the other's approval: the digest row is locked while deciding."""
    import threading

    cfg = approval_config(write_config, required=2, env={"NEWSEXCHANGE_DATABASE_URL": any_db_url})
    db = db_for(cfg)
    digest_id = make_digest(db)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def approve(editor: str) -> None:
        try:
            barrier.wait(timeout=10)  # before the transactions: SQLite serializes writers
            with db.session() as s:
                d = s.get(Digest, digest_id)
                assert d is not None
                decide(
                    s,
                    cfg,
                    d,
                    editor=editor,
                    decision="approve",
                    channel="web",
                    address=None,
                    now=NOW,
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=approve, args=(e,)) for e in (ANNA, BORIS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert state_of(db, digest_id) == "approved"
    from newsexchange.delivery.shards import plan_shards

    plan_shards(db, cfg, now=NOW)  # the send step queues the rows (issue 13), once
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 3
