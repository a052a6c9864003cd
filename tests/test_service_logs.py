"""The service's log, as an operator reads it from a real `newsexchange serve`: normal events
(serving, job done, stopped) at info, problems at warning, and the fetch summary naming each
failed source with its reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

from newsexchange.config import Config
from tests.test_service import NX, _free_port, _healthy, _wait

FAILING = """\
fetch: {interval_minutes: 30, retries: 0}
sources:
  - {id: inside, region: joensuu, url: "http://127.0.0.1:9/feed", language: fi}
"""


def test_normal_events_are_info_problems_warnings_and_failures_say_why(
    write_config: Callable[..., Config], tmp_path: Any
) -> None:
    cfg = write_config(FAILING)
    port = _free_port()
    err = (tmp_path / "stderr.log").open("w+")
    proc = subprocess.Popen(
        [NX, "serve", "--config", str(cfg.path), "--port", str(port)],
        env={**os.environ, "NEWSEXCHANGE_SECRET_KEY": "x" * 20},
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    try:
        assert _wait(lambda: _healthy(port), timeout=30)

        def fetched() -> bool:
            err.seek(0)
            return "fetch finished" in err.read()

        assert _wait(fetched, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    err.seek(0)
    lines = [json.loads(x) for x in err.read().splitlines() if x.startswith("{")]
    levels = {x["event"]: x["level"] for x in lines}
    assert levels["serving"] == "info" and levels["stopped"] == "info"
    assert levels["fetch finished with failures"] == "warning"
    [fetch] = [x for x in lines if x["event"] == "fetch finished with failures"]
    # The loopback address is not in fetch.allow_private: refused, and the log says so.
    assert "refused: address 127.0.0.1 is loopback" in fetch["failed_sources"]["inside"]
