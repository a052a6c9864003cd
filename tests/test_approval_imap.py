"""IMAP polling against a real IMAP server: Debian's dovecot, started per test module with a
throwaway configuration (plaintext on loopback, one passwd-file user, maildir in a temp
folder). Replies are delivered into the mailbox with IMAP APPEND, as a mail server would
deliver them, and ``poll_imap`` / ``newsexchange approvals poll-imap`` read them."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from newsexchange.approval import audit_entries, request_approval
from newsexchange.approval.inbound import PROCESSED_FLAG, poll_imap
from newsexchange.approval.tokens import reply_token
from newsexchange.config import Config
from newsexchange.db import Database, Digest, utcnow
from tests.test_approval import ANNA, NOW, approval_config, make_digest, run_cli, state_of
from tests.test_approval_inbound import AUTHSERV, raw_reply
from tests.webserver import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "news", "imap-test-password"


class DovecotServer:
    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp_path: that is mode 0700, and dovecot's mail processes run as
        # another user when we are root.
        self.dir = Path(tempfile.mkdtemp(prefix="nx-dovecot-"))
        self.dir.chmod(0o755)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DovecotServer:
        d = self.dir
        for sub in ("run", "state", "mail"):
            (d / sub).mkdir()
        (d / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        if os.getuid() == 0:
            owner = pwd.getpwnam("dovecot")
            os.chown(d / "mail", owner.pw_uid, owner.pw_gid)
            users = f"uid={owner.pw_uid} gid={owner.pw_gid}"
            run_as = ""
        else:  # a rootless dovecot: every service runs as us
            me = pwd.getpwuid(os.getuid()).pw_name
            users = f"uid={os.getuid()} gid={os.getgid()}"
            run_as = f"default_login_user = {me}\ndefault_internal_user = {me}\n"
        (d / "dovecot.conf").write_text(
            f"""base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
{run_as}protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%u
first_valid_uid = 1
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = {users} home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
        )
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(d / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"dovecot exited: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("dovecot did not start listening")

    def client(self):  # type: ignore[no-untyped-def]
        from imapclient import IMAPClient

        c = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        c.login(USER, PASSWORD)
        return c

    def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        c = self.client()
        try:
            c.append(folder, raw)
        finally:
            c.logout()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    if not os.path.exists(DOVECOT):
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's dovecot-imapd (./run test installs it)")
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd); IMAP untested")
    server = DovecotServer().start()
    yield server
    server.stop()


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> DovecotServer:
    """The shared server with an empty INBOX (and no Processed folder)."""
    c = dovecot.client()
    try:
        c.select_folder("INBOX")
        uids = c.search(["ALL"])
        if uids:
            c.delete_messages(uids)
            c.expunge()
        if c.folder_exists("Processed"):
            c.delete_folder("Processed")
    finally:
        c.logout()
    return dovecot


def imap_config(
    write_config: Callable[..., Config],
    server: DovecotServer,
    *,
    authserv_id: str | None = AUTHSERV,
    **kw: str,
) -> Config:
    mail = (
        'mail:\n  backend: outbox\n  from: "Exchange <news@example.org>"\n'
        "  outbox_dir: var/outbox\n"
        f"  imap: {{host: 127.0.0.1, port: {server.port}, ssl: false, processed_folder: Processed"
        + (f", authserv_id: {authserv_id}" if authserv_id else "")
        + "}\n"
    )
    env = {"IMAP_USER": USER, "IMAP_PASSWORD": kw.get("password", PASSWORD)}
    return approval_config(write_config, mail=mail, env=env)


def _token(cfg: Config, db: Database, digest_id: int, editor: str = ANNA) -> str:
    """The editor's own reply token, as their approval request carried it."""
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        return reply_token(cfg, d, editor)


def test_poll_acts_on_editor_reply_ignores_others_and_never_twice(
    mailbox: DovecotServer,
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
) -> None:
    cfg = imap_config(write_config, mailbox)
    db = db_for(cfg)
    digest_id = make_digest(db)
    request_approval(db, cfg, digest_id, now=NOW)
    to = f"news+{_token(cfg, db, digest_id)}.v1@example.org"
    mailbox.deliver(raw_reply("APPROVE\n", to=to, message_id="<a1@example.fi>"))
    c = mailbox.client()  # someone opened the mailbox first: the reply is read, not processed
    c.select_folder("INBOX")
    c.add_flags(c.search(["ALL"]), [b"\\Seen"])
    c.logout()
    mailbox.deliver(
        raw_reply("APPROVE\n", to=to, sender="mallory@example.com", message_id="<a2@x>")
    )
    mailbox.deliver(
        raw_reply(
            "APPROVE\n",
            to=to,
            message_id="<a3@example.fi>",
            subject="Automatic reply: away",
            extra="Auto-Submitted: auto-replied\r\n",
        )
    )
    report = poll_imap(db, cfg, now=NOW)
    data = report.to_json()
    assert data["ok"] and data["fetched"] == 3
    assert (data["acted"], data["ignored"]) == (1, 2)
    assert state_of(db, digest_id) == "approved"
    c = mailbox.client()
    try:
        assert c.select_folder("INBOX")[b"EXISTS"] == 0  # all moved out of the inbox
        c.select_folder("Processed")
        flags = c.get_flags(c.search(["ALL"]))
        assert len(flags) == 3
        assert all(b"\\Seen" in f and PROCESSED_FLAG in f for f in flags.values())
        # Put the approval back, unread, as if a crash happened before flagging it.
        c.copy(c.search(["ALL"]), "INBOX")
        c.select_folder("INBOX")
        c.remove_flags(c.search(["ALL"]), [b"\\Seen", PROCESSED_FLAG])
    finally:
        c.logout()
    second = poll_imap(db, cfg, now=NOW).to_json()
    assert second["fetched"] == 3 and second["duplicate"] == 3 and second["acted"] == 0
    with db.session() as s:
        approvals = [e for e in audit_entries(s, digest_id) if e["action"] == "approve"]
    assert len(approvals) == 1 and approvals[0]["actor"] == ANNA
    assert poll_imap(db, cfg, now=NOW).to_json()["fetched"] == 0


@pytest.mark.real_clock  # dovecot dates the reply's arrival, the command reads SINCE on ours
def test_cli_poll_imap_json_and_wrong_password_fails_cleanly(
    mailbox: DovecotServer,
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
) -> None:
    cfg = imap_config(write_config, mailbox)
    db = db_for(cfg)
    digest_id = make_digest(db)
    # The command runs on the real clock, so the request is mailed at the real now: signed at a
    # fixed date, its links and reply token would expire while the suite stays the same.
    request_approval(db, cfg, digest_id, now=utcnow())
    to = f"news+{_token(cfg, db, digest_id)}.v1@example.org"
    mailbox.deliver(raw_reply("REJECT wrong period\n", to=to, message_id="<r1@example.fi>"))
    assert cfg.path is not None

    def cli(password: str) -> tuple[int, dict[str, Any]]:
        code, out = run_cli(
            cfg,
            "approvals",
            "poll-imap",
            "--json",
            env={"IMAP_USER": USER, "IMAP_PASSWORD": password},
        )
        return code, json.loads(out)

    code, bad = cli("wrong")
    assert code == 1 and "IMAP" in bad["error"]
    assert state_of(db, digest_id) == "awaiting_approval"
    code, out = cli(PASSWORD)
    assert code == 0, out
    assert out["acted"] == 1 and out["results"][0]["verb"] == "reject"
    assert state_of(db, digest_id) == "revising"  # issue 11: a draft of the next version


def test_only_our_servers_authentication_results_vouch_for_an_imap_reply(
    mailbox: DovecotServer,
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
) -> None:
    cfg = imap_config(write_config, mailbox)
    db = db_for(cfg)
    digest_id = make_digest(db)
    request_approval(db, cfg, digest_id, now=NOW)
    to = f"news+{_token(cfg, db, digest_id)}.v1@example.org"
    received = (
        "Received: from mail.evil.example (mail.evil.example [203.0.113.9])\r\n"
        "\tby mx.example.org with ESMTPS; Mon, 16 Nov 2026 10:00:02 +0200\r\n"
    )
    forgeries = {
        # A header the sender wrote, naming another server: not ours, not trusted.
        "<f1@evil.example>": "Authentication-Results: mx.evil.example; dkim=pass "
        "header.d=example.fi; spf=pass smtp.mailfrom=anna@example.fi\r\n",
        # Our server found nothing; the sender's copy of our name sits below its Received.
        "<f2@evil.example>": "Authentication-Results: mx.example.org; dkim=none;\r\n"
        "\tspf=softfail smtp.mailfrom=mallory@evil.example\r\n"
        + received
        + "Authentication-Results: mx.example.org; dkim=pass header.d=example.fi\r\n",
        # DKIM passing, for the sender's own domain.
        "<f3@evil.example>": "Authentication-Results: mx.example.org; dkim=pass "
        "header.d=evil.example; spf=pass smtp.mailfrom=mallory@evil.example\r\n" + received,
        # No Authentication-Results at all.
        "<f4@evil.example>": "",
    }
    for mid, auth in forgeries.items():
        mailbox.deliver(raw_reply("APPROVE\n", to=to, message_id=mid, auth=auth))
    report = poll_imap(db, cfg, now=NOW).to_json()
    assert report["fetched"] == 4 and report["refused"] == 4 and report["acted"] == 0
    assert all("could not be verified" in r["reason"] for r in report["results"])
    assert state_of(db, digest_id) == "awaiting_approval"
    with db.session() as s:
        log = [e for e in audit_entries(s, digest_id) if e["action"] == "reply_unverified"]
    assert len(log) == 4 and {e["detail"]["via"] for e in log} == {"imap"}
    # Our own server's verdict, above its Received header, is what counts.
    mailbox.deliver(
        raw_reply(
            "APPROVE\n",
            to=to,
            message_id="<real@example.fi>",
            auth="Authentication-Results: mx.example.org;\r\n\tdkim=pass header.d=example.fi\r\n"
            + received.replace("evil.example", "example.fi"),
        )
    )
    assert poll_imap(db, cfg, now=NOW).to_json()["acted"] == 1
    assert state_of(db, digest_id) == "approved"


def test_without_authserv_id_imap_replies_cannot_act(
    mailbox: DovecotServer,
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
) -> None:
    cfg = imap_config(write_config, mailbox, authserv_id=None)
    db = db_for(cfg)
    digest_id = make_digest(db)
    request_approval(db, cfg, digest_id, now=NOW)
    mailbox.deliver(raw_reply("APPROVE\n", to=f"news+{_token(cfg, db, digest_id)}.v1@example.org"))
    report = poll_imap(db, cfg, now=NOW).to_json()
    assert report["refused"] == 1 and "mail.imap.authserv_id" in report["results"][0]["reason"]
    assert state_of(db, digest_id) == "awaiting_approval"
