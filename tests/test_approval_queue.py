"""Approval mail goes through the mail queue (issue 12): written in the transaction that
decided, sent after the commit, retried when the relay fails, never sent twice."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from newsexchange.approval import audit_entries, run_approvals
from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.db.queries import mail_queue
from newsexchange.db.tables import QueuedMail
from newsexchange.mail import OutgoingMessage, SendResult
from newsexchange.mail.queue import enqueue, flush
from tests.servers import SMTPServer
from tests.test_approval import ANNA, BORIS, NOW, approval_config, make_digest, state_of


def smtp_config(write_config: Callable[..., Config], port: int) -> Config:
    mail = (
        'mail:\n  backend: smtp\n  from: "Exchange <news@example.org>"\n'
        f"  smtp: {{host: 127.0.0.1, port: {port}}}\n"
    )
    return approval_config(write_config, mail=mail)


def queued(db: Database) -> list[QueuedMail]:
    with db.session() as s:
        return list(s.scalars(select(QueuedMail).order_by(QueuedMail.id)).all())


def test_approval_request_survives_smtp_outage(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = smtp_config(write_config, smtp_server.port)
    db = db_for(cfg)
    digest_id = make_digest(db)
    # The relay is down for a while: it answers every recipient "try again later".
    smtp_server.refuse = {ANNA: "451 4.3.0 try again later", BORIS: "451 4.3.0 try again later"}
    first = run_approvals(db, cfg, now=NOW)
    # The request is decided and recorded all the same; nothing is lost or rolled back.
    assert first.ok and first.requested == [digest_id]
    assert state_of(db, digest_id) == "awaiting_approval"
    with db.session() as s:
        assert "approval_requested" in [e["action"] for e in audit_entries(s, digest_id)]
    assert smtp_server.messages == []
    rows = queued(db)
    assert sorted(r.recipient for r in rows) == [ANNA, BORIS]
    assert {r.status for r in rows} == {"pending"} and {r.attempts for r in rows} == {1}
    assert all("451" in (r.last_error or "") for r in rows)
    ids = {r.recipient: r.message_id for r in rows}
    # Too early for the next attempt (back-off): still nothing.
    run_approvals(db, cfg, now=NOW + timedelta(seconds=30))
    assert smtp_server.messages == []
    # The relay is back: the next tick sends each request once, with its Message-ID.
    smtp_server.refuse = {}
    second = run_approvals(db, cfg, now=NOW + timedelta(minutes=2))
    assert second.ok and second.requested == []  # not asked again: only the mail was retried
    run_approvals(db, cfg, now=NOW + timedelta(minutes=5))
    for editor in (ANNA, BORIS):
        got = smtp_server.received_by(editor)
        assert len(got) == 1
        assert got[0]["Message-ID"] == ids[editor]
        assert got[0]["Subject"].startswith("Approval needed")
    rows = queued(db)
    assert {r.status for r in rows} == {"sent"} and {r.attempts for r in rows} == {2}


def test_a_permanent_refusal_is_marked_failed_and_not_retried(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = smtp_config(write_config, smtp_server.port)
    db = db_for(cfg)
    make_digest(db)
    smtp_server.refuse = {ANNA: "550 5.1.1 no such user"}
    run_approvals(db, cfg, now=NOW)
    assert len(smtp_server.received_by(BORIS)) == 1
    by_rcpt = {r.recipient: r for r in queued(db)}
    assert by_rcpt[ANNA].status == "failed" and "550" in (by_rcpt[ANNA].last_error or "")
    assert by_rcpt[BORIS].status == "sent"
    smtp_server.refuse = {}
    run_approvals(db, cfg, now=NOW + timedelta(hours=1))
    assert smtp_server.received_by(ANNA) == []


class RecordingMailer:
    """Accepts everything and records each Message-ID it was handed."""

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        with self._lock:
            self.sent.extend(str(m.msgid) for m in messages)
        return [SendResult(ok=True) for _ in messages]

    def close(self) -> None:
        pass


def _queue_some(db: Database, n: int) -> list[str]:
    ids = []
    with db.session() as s:
        for i in range(n):
            msg = EmailMessage()
            msg["From"] = "news@example.org"
            msg["To"] = ANNA
            msg["Subject"] = f"note {i}"
            msg["Message-ID"] = f"<note.{i}@example.org>"
            msg.set_content(f"note {i}\n")
            enqueue(s, msg, kind="editor_note", recipient=ANNA, digest_id=None, now=NOW)
            ids.append(msg["Message-ID"])
    return ids


def test_two_flushes_racing_send_each_mail_once(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = approval_config(write_config)
    db = db_for(cfg)
    ids = _queue_some(db, 5)
    mailer = RecordingMailer()
    # Process B lists what is due; process A then flushes everything; B goes on with its
    # (now stale) list: every claim it tries is refused by the conditional UPDATE.
    with db.session() as s:
        stale = mail_queue.due(s, now=NOW, limit=100)
    assert len(stale) == 5
    assert flush(db, cfg, now=NOW, mailer=mailer).sent == 5
    monkeypatch.setattr(mail_queue, "due", lambda session, *, now, limit: stale)
    assert flush(db, cfg, now=NOW, mailer=mailer).sent == 0
    monkeypatch.undo()
    assert sorted(mailer.sent) == sorted(ids)
    # And two flushes at the same moment in two threads, on a fresh batch.
    more = _queue_some(db, 20)[5:]  # Message-IDs repeat the first five: count them apart
    mailer.sent.clear()
    threads = [threading.Thread(target=flush, args=(db, cfg), kwargs={"now": NOW, "mailer": mailer})
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(mailer.sent) == 20 and set(more) <= set(mailer.sent)
    assert {r.status for r in queued(db)} == {"sent"}


def test_the_alerts_job_forgets_system_mail_sent_a_month_ago_and_keeps_failures(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    from newsexchange.service.jobs import JOB_RUNS_KEEP_DAYS, STEPS

    cfg = approval_config(write_config)
    db = db_for(cfg)
    old, recent = NOW - timedelta(days=JOB_RUNS_KEEP_DAYS + 1), NOW - timedelta(days=2)
    with db.session() as s:
        for kind, status, sent_at in (
            ("old-sent", "sent", old),
            ("recent-sent", "sent", recent),
            ("old-failed", "failed", None),
            ("pending", "pending", None),
        ):
            s.add(
                QueuedMail(
                    kind=kind, recipient=ANNA, message="x", status=status, attempts=1,
                    next_attempt_at=old, created_at=old, sent_at=sent_at,
                )
            )  # fmt: skip
    STEPS["alerts"].run(cfg, db, NOW, None)
    assert sorted(q.kind for q in queued(db)) == ["old-failed", "pending", "recent-sent"]
