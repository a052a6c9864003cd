"""Real local servers that stand in for the internet in tests.

- :class:`HTTPServer`: a threaded HTTP/1.1 server on loopback; tests register routes
  (``server.route("/feed.xml", handler)``) answering with status, headers and body, and read
  back every request it saw (``server.requests``) and how many TCP connections it accepted
  (``server.connections``: keep-alive serves many requests on one). Feeds, LibreTranslate, SendGrid and Google's
  translate endpoint are all spoken through it.
- :class:`SMTPServer`: aiosmtpd on loopback collecting every message it accepts; a test can
  make it refuse recipients (permanent 550 or temporary 451).
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (timeouts)
    drip: float = 0.0  # seconds between body chunks (slow bodies)


Handler = Callable[[Request], Response]


class HTTPServer:
    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self._connections = 0
        self._lock = threading.Lock()
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:  # once per accepted connection
                with outer._lock:
                    outer._connections += 1
                super().setup()

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = Request(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    dict(self.headers.items()),
                    body,
                )
                with outer._lock:
                    outer.requests.append(req)
                handler = outer.routes.get(parts.path) or outer.routes.get("*")
                resp = handler(req) if handler else Response(404, b"not found")
                if resp.delay:
                    time.sleep(resp.delay)
                data = resp.body.encode() if isinstance(resp.body, str) else resp.body
                try:
                    self.send_response(resp.status)
                    headers = {k.lower(): v for k, v in resp.headers.items()}
                    for k, v in resp.headers.items():
                        self.send_header(k, v)
                    if "content-length" not in headers:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    if resp.drip:
                        for i in range(0, len(data), 64):
                            self.wfile.write(data[i : i + 64])
                            self.wfile.flush()
                            time.sleep(resp.drip)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self._server = _Server(("127.0.0.1", 0), _H)
        self.port = self._server.server_address[1]
        # A short poll interval: stop() (shutdown) waits up to one interval, per test.
        self._thread = threading.Thread(
            target=lambda: self._server.serve_forever(poll_interval=0.05), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: what a config lists in ``fetch.allow_private`` to fetch here."""
        return f"127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """TCP connections accepted so far (each may have carried many requests)."""
        with self._lock:
            return self._connections

    def route(self, path: str, handler: Handler | Response) -> None:
        if isinstance(handler, Response):
            fixed = handler
            self.routes[path] = lambda _req: fixed
        else:
            self.routes[path] = handler

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def start(self) -> HTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def allow_private(*servers: HTTPServer) -> str:
    """``allow_private: ["127.0.0.1:PORT", …]`` for a ``fetch:`` flow mapping in a test config:
    the fetcher refuses loopback addresses that are not listed."""
    return "allow_private: [" + ", ".join(f'"{s.address}"' for s in servers) + "]"


class SMTPServer:
    """aiosmtpd on loopback; ``messages`` holds every accepted message, parsed."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str], bytes]] = []
        self.refuse: dict[str, str] = {}  # recipient → SMTP reply, e.g. "550 5.1.1 no such user"
        self._lock = threading.Lock()
        outer = self

        class _Handler:
            async def handle_RCPT(
                self,
                server: Any,
                session: Any,
                envelope: Any,
                address: str,
                rcpt_options: list[str],
            ) -> str:
                reply = outer.refuse.get(address.lower())
                if reply:
                    return reply
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                raw = envelope.original_content or envelope.content
                msg = email.message_from_bytes(raw, policy=email.policy.default)
                with outer._lock:
                    outer.messages.append(msg)  # type: ignore[arg-type]
                    outer.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), raw))
                return "250 Message accepted for delivery"

        self.port = _free_port()
        self._controller = Controller(_Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> SMTPServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def received_by(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [
                m
                for (_f, rcpts, _r), m in zip(self.envelopes, self.messages, strict=True)
                if address.lower() in (r.lower() for r in rcpts)
            ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
