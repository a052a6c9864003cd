"""``newsexchange send`` stopped with SIGTERM (systemd stopping it, an operator's kill) ends
like ``serve`` does: the chunk on the wire finishes and is recorded, the deliveries it had
claimed go back to pending, it says what it did and exits 0 — and the next run sends the rest,
nobody twice. A real process against a slow real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Database, Delivery, Digest
from tests.test_delivery_support import delivery_config, seed_digest

RECIPIENTS = 24
RATE = 4  # messages a second: chunks of 4 (send.py sizes chunks to about a second's worth)


class SlowSMTP:
    """aiosmtpd that takes ``delay`` seconds over each message, like a loaded MTA."""

    def __init__(self, delay: float) -> None:
        from aiosmtpd.controller import Controller

        from tests.servers import _free_port

        self.rcpts: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                await asyncio.sleep(delay)
                with outer.lock:
                    outer.rcpts.extend(envelope.rcpt_tos)
                return "250 OK queued"

        self.port = _free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def count(self) -> int:
        with self.lock:
            return len(self.rcpts)


@pytest.fixture
def slow_smtp() -> Iterator[SlowSMTP]:
    server = SlowSMTP(delay=0.05)
    server.controller.start()
    yield server
    server.controller.stop()


def _cmd(cfg: Config, did: int, *, json_mode: bool) -> list[str]:
    exe = Path(sys.executable).with_name("newsexchange")
    return [str(exe), "send", str(did), "--config", str(cfg.path)] + (
        ["--json"] if json_mode else []
    )


@pytest.mark.parametrize("json_mode", [True, False], ids=["json", "text"])
def test_sigterm_hands_the_claimed_rows_back_exits_0_and_the_next_run_sends_the_rest_once(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    slow_smtp: SlowSMTP,
    json_mode: bool,
) -> None:
    cfg = delivery_config(write_config, smtp_port=slow_smtp.port, connections=1, rate=RATE)
    db = db_for(cfg)
    did = seed_digest(db, cfg, RECIPIENTS)
    env = {**os.environ, "NEWSEXCHANGE_SECRET_KEY": "s3cret"}

    first = subprocess.Popen(
        _cmd(cfg, did, json_mode=json_mode),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while slow_smtp.count() < 2:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the sender never got going"
        time.sleep(0.005)
    with db.session() as s:
        claimed = [d for d in s.scalars(select(Delivery)) if d.status == "claimed"]
        assert len(claimed) > 4, "the sender holds a claim on the rest while it sends"
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=30)

    assert first.returncode == 0, (first.returncode, out, err)
    assert "Traceback" not in err
    sent_before = slow_smtp.count()
    assert 2 <= sent_before < RECIPIENTS, "stopped too late to test anything"
    with db.session() as s:
        rows = list(s.scalars(select(Delivery).where(Delivery.digest_id == did)))
        digest = s.get(Digest, did)
        assert digest is not None and digest.state == "sending"  # resumable, not "sent"
    status = Counter(d.status for d in rows)
    assert status == {"sent": sent_before, "pending": RECIPIENTS - sent_before}, status
    assert all(d.claimed_by is None and d.attempts == 0 for d in rows if d.status == "pending")
    handed_back = RECIPIENTS - sent_before
    if json_mode:
        report = json.loads(out)
        assert report["stopped"] == "SIGTERM"
        assert report["sent"] == sent_before
        assert report["handed_back"] == handed_back
        assert report["pending"] == handed_back
        assert report["ok"] is True
    else:
        assert (
            f"stopped on request (SIGTERM): sent {sent_before}, handed back {handed_back} "
            "claimed deliveries" in out
        ), out

    second = subprocess.run(
        _cmd(cfg, did, json_mode=True), env=env, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 0, second.stderr
    report2 = json.loads(second.stdout)
    assert report2["ok"] and report2["sent"] == handed_back and report2["pending"] == 0
    assert report2["stopped"] is None
    with db.session() as s:
        assert {d.status for d in s.scalars(select(Delivery))} == {"sent"}
    received = Counter(slow_smtp.rcpts)
    assert set(received) == {d.email for d in rows}
    assert set(received.values()) == {1}, "nobody got the digest twice"
