"""The fetcher against a real HTTP server on loopback: conditional GET, timeouts, retries,
redirects, size caps, compression (and compression bombs), files, politeness."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import brotli
import pytest

from newsexchange.errors import FetchError
from newsexchange.ingest.fetch import DefaultFetcher, FetchOptions, FetchResult
from tests.servers import HTTPServer, Request, Response

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>T</title><link>http://example.fi/</link>
<item><title>Uutinen</title><link>http://example.fi/1</link><guid>1</guid></item>
</channel></rss>"""

FAST = {"connect_timeout": 1.0, "read_timeout": 1.0, "total_timeout": 5.0, "backoff_base": 0.01}


def allow(url: str) -> tuple[str, ...]:
    """The loopback test server of ``url`` in ``allow_private`` (internal addresses are
    refused otherwise; tests/test_ssrf.py tests that)."""
    netloc = urlsplit(url).netloc
    return (netloc,) if netloc else ()


def run_fetch(
    url: str, *, sleeps: list[float] | None = None, base_dir: Path | None = None, **kw: Any
) -> FetchResult:
    opts = FetchOptions(**{**FAST, "allow_private": allow(url), **kw})

    async def fake_sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    async def go() -> FetchResult:
        f = DefaultFetcher(opts, base_dir=base_dir, sleep=fake_sleep)
        try:
            return await f.fetch(url)
        finally:
            await f.aclose()

    return asyncio.run(go())


def fetch_conditional(url: str, etag: str | None, last_modified: str | None) -> FetchResult:
    async def go() -> FetchResult:
        f = DefaultFetcher(FetchOptions(**FAST, allow_private=allow(url)))  # type: ignore[arg-type]
        try:
            return await f.fetch(url, etag=etag, last_modified=last_modified)
        finally:
            await f.aclose()

    return asyncio.run(go())


def failure(url: str, **kw: Any) -> FetchError:
    with pytest.raises(FetchError) as info:
        run_fetch(url, **kw)
    return info.value


def test_conditional_get_sends_validators_and_304_has_no_body(http_server: HTTPServer) -> None:
    def handler(req: Request) -> Response:
        if req.header("If-None-Match") == '"v1"':
            return Response(304)
        return Response(
            200, RSS, {"ETag": '"v1"', "Last-Modified": "Mon, 23 Nov 2026 08:00:00 GMT"}
        )

    http_server.route("/feed", handler)
    first = run_fetch(http_server.url + "/feed")
    assert first.status == 200 and first.body == RSS and first.etag == '"v1"'
    second = fetch_conditional(http_server.url + "/feed", first.etag, first.last_modified)
    assert second.not_modified and second.body is None
    req = http_server.requests_to("/feed")[-1]
    assert req.header("If-None-Match") == '"v1"'
    assert req.header("If-Modified-Since") == "Mon, 23 Nov 2026 08:00:00 GMT"


def test_user_agent_names_the_project_and_its_url(http_server: HTTPServer) -> None:
    http_server.route("/feed", Response(200, RSS))
    run_fetch(
        http_server.url + "/feed",
        user_agent="newsexchange/0.1 (+http://x.example; regional news exchange)",
    )
    ua = http_server.requests_to("/feed")[0].header("User-Agent") or ""
    assert ua.startswith("newsexchange/") and "http://x.example" in ua


def test_read_timeout_is_retried_then_reported(http_server: HTTPServer) -> None:
    http_server.route("/slow", Response(200, RSS, delay=0.6))
    err = failure(http_server.url + "/slow", read_timeout=0.2, retries=1)
    assert "timeout" in err.message and err.retryable
    assert len(http_server.requests_to("/slow")) == 2


def test_total_timeout_stops_a_server_that_drips_forever(http_server: HTTPServer) -> None:
    # Each 64-byte chunk arrives well inside the read timeout; only the total can stop it.
    http_server.route("/drip", Response(200, b"x" * 64 * 200, drip=0.02))
    started = time.monotonic()
    err = failure(http_server.url + "/drip", read_timeout=1.0, total_timeout=0.5, retries=0)
    assert "in total" in err.message
    assert time.monotonic() - started < 2.0


def test_server_error_is_retried_until_success(http_server: HTTPServer) -> None:
    calls: list[int] = []

    def handler(_req: Request) -> Response:
        calls.append(1)
        return Response(500, b"oops") if len(calls) == 1 else Response(200, RSS)

    http_server.route("/flaky", handler)
    sleeps: list[float] = []
    result = run_fetch(http_server.url + "/flaky", sleeps=sleeps, retries=2)
    assert result.status == 200 and result.attempts == 2 and len(sleeps) == 1


def test_429_honours_retry_after_then_succeeds(http_server: HTTPServer) -> None:
    calls: list[int] = []

    def handler(_req: Request) -> Response:
        calls.append(1)
        if len(calls) == 1:
            return Response(429, b"slow down", {"Retry-After": "3"})
        return Response(200, RSS)

    http_server.route("/limited", handler)
    sleeps: list[float] = []
    result = run_fetch(http_server.url + "/limited", sleeps=sleeps)
    assert result.status == 200 and sleeps == [3.0]


def test_long_retry_after_ends_the_fetch_and_is_handed_to_the_source(
    http_server: HTTPServer,
) -> None:
    http_server.route("/limited", Response(503, b"", {"Retry-After": "7200"}))
    sleeps: list[float] = []
    err = failure(http_server.url + "/limited", sleeps=sleeps)
    assert err.status == 503 and err.retry_after == 7200.0 and sleeps == []
    assert len(http_server.requests_to("/limited")) == 1


def test_not_found_is_not_retried(http_server: HTTPServer) -> None:
    err = failure(http_server.url + "/missing", retries=3)
    assert err.status == 404 and not err.retryable and "404" in err.message
    assert len(http_server.requests_to("/missing")) == 1


def test_redirect_loop_ends_with_a_clear_error(http_server: HTTPServer) -> None:
    http_server.route("/a", Response(302, b"", {"Location": "/b"}))
    http_server.route("/b", Response(302, b"", {"Location": "/a"}))
    err = failure(http_server.url + "/a", max_redirects=5)
    assert "too many redirects" in err.message and not err.retryable
    assert len(http_server.requests) <= 7


def test_permanent_redirect_reports_the_new_url_temporary_does_not(http_server: HTTPServer) -> None:
    http_server.route("/old", Response(301, b"", {"Location": "/new"}))
    http_server.route("/tmp", Response(302, b"", {"Location": "/new"}))
    http_server.route("/new", Response(200, RSS))
    moved = run_fetch(http_server.url + "/old")
    assert moved.permanent_url == http_server.url + "/new" and moved.body == RSS
    assert run_fetch(http_server.url + "/tmp").permanent_url is None


def test_body_over_the_cap_is_refused(http_server: HTTPServer) -> None:
    http_server.route("/big", Response(200, b"<rss>" + b" " * 20_000))
    err = failure(http_server.url + "/big", max_body_bytes=10_000)
    assert "limit" in err.message and not err.retryable


def test_gzip_bomb_stops_early_without_inflating_it(http_server: HTTPServer) -> None:
    bomb = gzip.compress(b"\0" * 50_000_000, compresslevel=6)  # ~50 KB on the wire
    http_server.route("/bomb", Response(200, bomb, {"Content-Encoding": "gzip"}))
    tracemalloc.start()
    try:
        err = failure(http_server.url + "/bomb", max_body_bytes=1_000_000)
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "compression bomb" in err.message
    assert peak < 20_000_000, f"peak {peak} bytes: the bomb was inflated"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate", "br"])
def test_compressed_bodies_are_decoded_as_served(http_server: HTTPServer, coding: str) -> None:
    encoders = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "raw-deflate": lambda b: zlib.compress(b)[2:-4],
        "br": brotli.compress,
    }
    header = "deflate" if coding == "raw-deflate" else coding
    body = RSS * 50
    http_server.route("/z", Response(200, encoders[coding](body), {"Content-Encoding": header}))
    assert run_fetch(http_server.url + "/z").body == body
    assert "br" in (http_server.requests_to("/z")[0].header("Accept-Encoding") or "")


def test_brotli_bomb_stops_early(http_server: HTTPServer) -> None:
    bomb = brotli.compress(b"\0" * 20_000_000, quality=5)
    http_server.route("/bomb", Response(200, bomb, {"Content-Encoding": "br"}))
    err = failure(http_server.url + "/bomb", max_body_bytes=1_000_000)
    assert "compression bomb" in err.message


def test_connection_refused_is_a_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = failure(f"http://127.0.0.1:{port}/feed", retries=0)
    assert "cannot connect" in err.message


def test_file_urls_are_read_relative_to_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "samples").mkdir()
    feed = tmp_path / "samples" / "a.xml"
    feed.write_bytes(RSS)
    rel = run_fetch("file:samples/a.xml", base_dir=tmp_path)
    absolute = run_fetch(f"file://{feed}")
    assert rel.body == RSS == absolute.body and rel.etag

    async def again() -> FetchResult:
        f = DefaultFetcher(FetchOptions(), base_dir=tmp_path)
        try:
            return await f.fetch("file:samples/a.xml", etag=rel.etag)
        finally:
            await f.aclose()

    assert asyncio.run(again()).not_modified
    err = failure("file:samples/missing.xml", base_dir=tmp_path)
    assert "missing.xml" in err.message


def test_requests_per_host_are_bounded(http_server: HTTPServer) -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def handler(_req: Request) -> Response:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return Response(200, RSS)

    http_server.route("*", handler)

    async def go() -> list[FetchResult]:
        opts = FetchOptions(
            **FAST, per_host=2, concurrency=10, allow_private=allow(http_server.url)
        )  # type: ignore[arg-type]
        f = DefaultFetcher(opts)
        try:
            return await asyncio.gather(*(f.fetch(f"{http_server.url}/f{i}") for i in range(8)))
        finally:
            await f.aclose()

    results = asyncio.run(go())
    assert all(r.status == 200 for r in results)
    assert state["max"] == 2
