"""An unchanged refresh keeps its connections: conditional requests answered 304 go over
kept-alive connections (at most ``fetch.per_host`` a host), a connection the server closed
while idle is not reused, and cookies still work where a response sets one."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.ingest import run_fetch
from newsexchange.ingest.fetch import DefaultFetcher, FetchOptions
from newsexchange.ingest.guard import _readable
from tests.servers import HTTPServer, Request, Response, allow_private

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
FAST = {"connect_timeout": 1.0, "read_timeout": 1.0, "total_timeout": 5.0, "retries": 0}


def rss(i: int) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Feed {i}</title><link>http://example.fi/{i}</link>"
        f"<item><title>Joensuun kaupunki avaa kirjaston {i}</title>"
        f"<link>http://example.fi/{i}/1</link><guid>{i}-1</guid>"
        "<description>Joensuun kaupunki kertoi maanantaina uudesta kirjastosta.</description>"
        "</item></channel></rss>"
    ).encode()


def conditional(req: Request) -> Response:
    """Every path is a feed whose ETag is its path: 304 when the client has it."""
    tag = f'"{req.path}"'
    if req.header("If-None-Match") == tag:
        return Response(304, headers={"ETag": tag})
    return Response(200, rss(len(req.path)), {"ETag": tag, "Content-Type": "application/rss+xml"})


def fetcher_for(server: HTTPServer, **kw: object) -> DefaultFetcher:
    return DefaultFetcher(FetchOptions(**{**FAST, "allow_private": (server.address,), **kw}))  # type: ignore[arg-type]


def test_conditional_requests_answered_304_share_one_connection(http_server: HTTPServer) -> None:
    http_server.route("*", conditional)

    async def go() -> list[bool]:
        f = fetcher_for(http_server)
        try:
            return [
                (await f.fetch(f"{http_server.url}/f{i}", etag=f'"/f{i}"')).not_modified
                for i in range(20)
            ]
        finally:
            await f.aclose()

    assert asyncio.run(go()) == [True] * 20
    assert len(http_server.requests) == 20
    assert http_server.connections == 1


@pytest.fixture
def twenty_feeds(
    write_config: Callable[..., Config], http_server: HTTPServer, tmp_path: Path
) -> Iterator[tuple[Config, Database]]:
    http_server.route("*", conditional)
    sources = "\n".join(
        f"  - {{id: f{i}, region: joensuu, language: fi, url: '{http_server.url}/f{i}'}}"
        for i in range(20)
    )
    cfg = write_config(
        "fetch: {connect_timeout: 1, read_timeout: 1, total_timeout: 4, retries: 0, "
        f"interval_minutes: 30, per_host: 2, {allow_private(http_server)}}}\n"
        f"sources:\n{sources}\n"
    )
    db = Database(f"sqlite:///{tmp_path}/refresh.db")
    yield cfg, db
    db.dispose()


def test_unchanged_refresh_of_20_feeds_opens_at_most_per_host_connections(
    twenty_feeds: tuple[Config, Database], http_server: HTTPServer
) -> None:
    cfg, db = twenty_feeds
    first = run_fetch(db, cfg, now=NOW)
    assert (first.ok, first.failed) == (20, 0)
    before = http_server.connections
    assert before <= 2  # the first fetch reads whole bodies, so it reuses them too
    again = run_fetch(db, cfg, now=NOW + timedelta(minutes=31))
    assert again.not_modified == 20
    assert len(http_server.requests) == 40
    assert http_server.connections - before <= 2  # before the fix: 20


class _ClosingServer:
    """Answers one 304 per connection, then closes it without saying so (no
    ``Connection: close``): the client holds an idle connection the server has dropped."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    buf += conn.recv(4096)
                conn.sendall(b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n')
            self.closed.set()

    def stop(self) -> None:
        self.sock.close()


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    server = _ClosingServer()
    url = f"http://127.0.0.1:{server.port}/feed"

    async def go() -> list[bool]:
        f = DefaultFetcher(FetchOptions(**FAST, allow_private=(f"127.0.0.1:{server.port}",)))  # type: ignore[arg-type]
        try:
            results = []
            for _ in range(3):
                server.closed.clear()
                results.append((await f.fetch(url, etag='"x"')).not_modified)
                await asyncio.to_thread(server.closed.wait, 5)
            return results
        finally:
            await f.aclose()

    try:
        # No retries: a reused dead connection would fail the fetch ("server disconnected").
        assert asyncio.run(go()) == [True, True, True]
        assert server.accepted == 3
    finally:
        server.stop()


def test_readable_means_data_or_the_end() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert not _readable(a)  # idle, open
        b.sendall(b"x")
        assert _readable(a)
        a.recv(1)
        assert not _readable(a)
        b.close()
        assert _readable(a)  # the peer closed: recv would return b""
    assert _readable(a)  # closed here: fileno() is -1


def test_a_cookie_a_response_sets_is_sent_back(http_server: HTTPServer) -> None:
    """The jar skips responses without Set-Cookie; one that sets a cookie and redirects
    still gets it back (some feeds sit behind such a cookie check)."""

    def gate(req: Request) -> Response:
        if req.header("Cookie") == "seen=1":
            return Response(200, rss(1), {"Content-Type": "application/rss+xml"})
        return Response(302, headers={"Set-Cookie": "seen=1; Path=/", "Location": "/feed"})

    http_server.route("/feed", gate)

    async def go() -> int:
        f = fetcher_for(http_server)
        try:
            return (await f.fetch(f"{http_server.url}/feed")).status
        finally:
            await f.aclose()

    assert asyncio.run(go()) == 200
    assert [r.header("Cookie") for r in http_server.requests_to("/feed")] == [None, "seen=1"]
