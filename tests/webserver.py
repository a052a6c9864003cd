"""The real web app served by uvicorn on loopback, in a thread, for tests.

    server = WebServer(create_app(config, db)).start()
    httpx.get(server.url + "/healthz")
    server.stop()

Or the ``web_app`` fixture factory (``tests/test_approval_web.py`` shows it). The app's clock
can be set (``server.app.state.clock = lambda: when``) so token expiry is tested without
sleeping; pages read it through ``request.app.state.clock`` when present.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


class WebServer:
    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        import uvicorn

        self.app = app
        self.host = host
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host=host, port=self.port, log_level="warning", lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config)  # in a thread it leaves signal handlers alone
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> WebServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
