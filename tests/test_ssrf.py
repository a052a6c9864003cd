"""Feeds cannot reach inside: the real fetcher against real loopback servers, with
``fetch.allow_private`` letting the test's own server in and nothing else.

Only loopback is ever connected to. Private, link-local and metadata addresses come from an
injected resolver, and the socket layer under the address check is :class:`LoopbackOnly`,
which records every address the check let through and opens sockets to loopback only, so
even a broken check could not reach another machine from this suite.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpcore
import pytest

from newsexchange.common.addresses import (
    AddressPolicy,
    AddressRefused,
    Allowed,
    host_address,
    parse_allowed,
    refusal_reason,
)
from newsexchange.config import Config
from newsexchange.db import Database, Source
from newsexchange.errors import ConfigError, FetchError
from newsexchange.ingest import run_fetch
from newsexchange.ingest.fetch import DefaultFetcher, FetchOptions, FetchResult
from newsexchange.ingest.guard import system_resolver
from tests.servers import HTTPServer, Response, allow_private

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>T</title><link>http://example.fi/</link>
<item><title>Uutinen</title><link>http://example.fi/1</link><guid>1</guid></item>
</channel></rss>"""
FAST: dict[str, Any] = {
    "connect_timeout": 1.0,
    "read_timeout": 1.0,
    "total_timeout": 5.0,
    "backoff_base": 0.01,
}
#: A globally routable answer for the rebinding resolver. Never connected to: the address
#: check passes it to LoopbackOnly, which refuses to open anything but loopback.
PUBLIC_LOOKING = "93.184.215.14"


class LoopbackOnly(httpcore.AsyncNetworkBackend):
    """The socket layer beneath the address check, for tests: ``asked`` lists every
    (address, port) the check handed down; only loopback addresses get a real socket."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.asked.append((host, port))
        if not ipaddress.ip_address(host).is_loopback:
            raise httpcore.ConnectError("test network: only loopback sockets are opened")
        return await self._real.connect_tcp(
            host, port, timeout=timeout, local_address=local_address
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("no unix sockets in tests")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def names(table: dict[str, list[str]], calls: list[str] | None = None) -> Any:
    """A resolver answering ``table``'s names itself and IP literals as the system does."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        if host in table:
            return table[host]
        assert host_address(host) is not None, f"the test resolved an unexpected name {host}"
        return await system_resolver(host, port)

    return resolve


def fetch_all(
    urls: list[str],
    *,
    allow: Sequence[str] = (),
    resolver: Any = None,
    network: LoopbackOnly | None = None,
    **kw: Any,
) -> list[FetchResult | FetchError]:
    """Fetch ``urls`` one after another with one fetcher; errors are returned, not raised."""
    opts = FetchOptions(**{**FAST, "allow_private": tuple(allow), **kw})

    async def go() -> list[FetchResult | FetchError]:
        f = DefaultFetcher(opts, resolver=resolver, network=network or LoopbackOnly())
        out: list[FetchResult | FetchError] = []
        try:
            for url in urls:
                try:
                    out.append(await f.fetch(url))
                except FetchError as exc:
                    out.append(exc)
            return out
        finally:
            await f.aclose()

    return asyncio.run(go())


def refused(url: str, **kw: Any) -> FetchError:
    (result,) = fetch_all([url], **kw)
    assert isinstance(result, FetchError), f"{url} was fetched: {result}"
    return result


class Listener:
    """A bare listening socket on loopback: ``connections()`` says how many TCP connections
    reached it (completed handshakes wait in the backlog even when nobody accepts)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def connections(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- (a), (b): the listed server is fetched, the same server on another port is not -------------


def test_the_listed_server_is_fetched_and_its_connection_pooled(http_server: HTTPServer) -> None:
    http_server.route("/feed", Response(200, RSS))
    network = LoopbackOnly()
    results = fetch_all(
        [f"{http_server.url}/feed", f"{http_server.url}/feed"],
        allow=[http_server.address],
        network=network,
    )
    assert [r.body for r in results if isinstance(r, FetchResult)] == [RSS, RSS]
    assert len(http_server.requests_to("/feed")) == 2
    # One connection for both: the address check sits where connections open, not per request.
    assert network.asked == [("127.0.0.1", http_server.port)]


def test_a_loopback_server_on_a_port_not_listed_is_refused_before_connecting(
    http_server: HTTPServer,
) -> None:
    other = HTTPServer().start()
    try:
        other.route("/feed", Response(200, RSS))
        network = LoopbackOnly()
        err = refused(f"{other.url}/feed", allow=[http_server.address], network=network)
        assert err.message == (
            "refused: address 127.0.0.1 is loopback (fetch.allow_private), "
            f"connecting to 127.0.0.1:{other.port}"
        )
        assert not err.retryable and err.status is None
        assert network.asked == [] and other.requests == []
    finally:
        other.stop()


def test_nothing_listed_refuses_even_the_test_server(http_server: HTTPServer) -> None:
    http_server.route("/feed", Response(200, RSS))
    err = refused(f"{http_server.url}/feed", retries=3)
    assert err.message.startswith("refused: address 127.0.0.1 is loopback")
    assert http_server.requests == []


# -- (c), (f): redirects to loopback in every spelling ---------------------------------------


def redirect_targets(allowed_port: int, other: int) -> list[str]:
    return [
        f"http://127.0.0.1:{other}/feed",
        f"http://127.0.0.2:{allowed_port}/feed",
        "http://2130706433/feed",
        f"http://2130706433:{other}/feed",
        "http://0x7f000001/feed",
        f"http://0x7f.1:{other}/feed",
        f"http://[::ffff:127.0.0.1]:{other}/feed",
        f"http://localhost:{other}/feed",
        # The allowed port in other spellings: an entry allows exactly the host it names.
        f"http://2130706433:{allowed_port}/feed",
        f"http://localhost:{allowed_port}/feed",
        f"http://[::ffff:127.0.0.1]:{allowed_port}/feed",
    ]


def test_redirects_to_loopback_in_every_spelling_are_refused_before_connecting(
    http_server: HTTPServer, listener: Listener
) -> None:
    targets = redirect_targets(http_server.port, listener.port)
    for i, target in enumerate(targets):
        http_server.route(f"/r{i}", Response(302, b"", {"Location": target}))
    network = LoopbackOnly()
    results = fetch_all(
        [f"{http_server.url}/r{i}" for i in range(len(targets))],
        allow=[http_server.address],
        network=network,
        retries=2,
    )
    for target, result in zip(targets, results, strict=True):
        assert isinstance(result, FetchError), f"{target} was followed"
        assert result.message.startswith("refused: address "), (target, result.message)
        assert "is loopback (fetch.allow_private)" in result.message, target
        assert not result.retryable
    # Each redirect was asked for once (no retries), and no socket went anywhere but the
    # allowed server: the listener on the other port never saw a handshake.
    assert all(len(http_server.requests_to(f"/r{i}")) == 1 for i in range(len(targets)))
    assert {a for a in network.asked} == {("127.0.0.1", http_server.port)}
    assert listener.connections() == 0


def test_an_octal_ip_in_a_redirect_is_not_followed(http_server: HTTPServer) -> None:
    # httpx itself rejects 0177.0.0.1 as an invalid IPv4 address in a Location header.
    http_server.route("/r", Response(302, b"", {"Location": "http://0177.0.0.1/feed"}))
    network = LoopbackOnly()
    err = refused(f"{http_server.url}/r", allow=[http_server.address], network=network)
    assert "0177.0.0.1" in err.message
    assert network.asked == [("127.0.0.1", http_server.port)]


def test_the_refusal_reads_the_same_whether_or_not_something_listens(
    http_server: HTTPServer, listener: Listener
) -> None:
    closed = closed_port()
    http_server.route(
        "/open", Response(302, b"", {"Location": f"http://127.0.0.1:{listener.port}/"})
    )
    http_server.route("/closed", Response(302, b"", {"Location": f"http://127.0.0.1:{closed}/"}))
    http_server.route("/pg", Response(302, b"", {"Location": "http://127.0.0.1:5432/"}))
    results = fetch_all(
        [f"{http_server.url}/open", f"{http_server.url}/closed", f"{http_server.url}/pg"],
        allow=[http_server.address],
    )
    texts = []
    for result, port in zip(results, (listener.port, closed, 5432), strict=True):
        assert isinstance(result, FetchError)
        assert (result.status, result.retryable, result.retry_after) == (None, False, None)
        texts.append(result.message.replace(str(port), "PORT"))
    assert texts[0] == texts[1] == texts[2]
    assert texts[0] == (
        "refused: address 127.0.0.1 is loopback (fetch.allow_private), connecting to 127.0.0.1:PORT"
    )
    assert listener.connections() == 0


# -- (d), (e): internal addresses from DNS, and a name that rebinds -----------------------------

INTERNAL = [
    ("10.0.0.5", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("fc00::1", "private"),
    ("fd00:ec2::254", "private"),
    ("fe80::1", "link-local"),
    ("100.64.0.1", "shared (carrier-grade NAT)"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::ffff:10.0.0.5", "private"),
    ("240.0.0.1", "reserved"),
]


@pytest.mark.parametrize(("address", "kind"), INTERNAL)
def test_a_name_resolving_to_an_internal_address_is_refused_without_connecting(
    address: str, kind: str
) -> None:
    network = LoopbackOnly()
    calls: list[str] = []
    resolver = names({"feeds.example.test": [address]}, calls)
    err = refused("http://feeds.example.test/rss", resolver=resolver, network=network, retries=2)
    shown = ipaddress.ip_address(address)
    assert err.message == (
        f"refused: address {shown} is {kind} (fetch.allow_private), "
        "connecting to feeds.example.test:80"
    )
    assert not err.retryable
    assert calls == ["feeds.example.test"]  # refused once, not retried
    assert network.asked == []


def test_a_redirect_to_the_metadata_address_is_refused(http_server: HTTPServer) -> None:
    http_server.route(
        "/r", Response(302, b"", {"Location": "http://metadata.test/latest/meta-data/"})
    )
    network = LoopbackOnly()
    resolver = names({"metadata.test": ["169.254.169.254"]})
    err = refused(
        f"{http_server.url}/r", allow=[http_server.address], resolver=resolver, network=network
    )
    assert err.message.startswith("refused: address 169.254.169.254 is link-local")
    assert network.asked == [("127.0.0.1", http_server.port)]


def test_a_name_with_one_internal_answer_among_public_ones_is_refused_whole() -> None:
    network = LoopbackOnly()
    resolver = names({"mixed.test": [PUBLIC_LOOKING, "10.0.0.5"]})
    err = refused("http://mixed.test/", resolver=resolver, network=network)
    assert err.message.startswith("refused: address 10.0.0.5 is private")
    assert network.asked == []


def test_a_rebinding_name_is_checked_on_the_address_actually_connected(
    listener: Listener,
) -> None:
    """First answer public-looking, the next one 127.0.0.1: a check made on the first
    lookup would pass; the fetcher checks the address of every connection it opens."""
    answers = iter([[PUBLIC_LOOKING], ["127.0.0.1"]])
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return next(answers) if host == "rebind.test" else [host]

    network = LoopbackOnly()
    url = f"http://rebind.test:{listener.port}/feed"
    # The same fetcher twice: the first connection gets the public-looking answer (which the
    # test network does not open); the next one resolves again and gets 127.0.0.1.
    first, second = fetch_all([url, url], resolver=rebinding, network=network)
    assert calls == ["rebind.test", "rebind.test"]
    assert isinstance(first, FetchError) and first.message.startswith("cannot connect")
    assert isinstance(second, FetchError)
    assert second.message == (
        "refused: address 127.0.0.1 is loopback (fetch.allow_private), "
        f"connecting to rebind.test:{listener.port}"
    )
    # The public answer went through the check (and was not opened by the test network);
    # 127.0.0.1 never reached the socket layer, and the listener saw no handshake.
    assert network.asked == [(PUBLIC_LOOKING, listener.port)]
    assert listener.connections() == 0


def test_a_listed_name_is_fetched_wherever_it_resolves(http_server: HTTPServer) -> None:
    http_server.route("/feed", Response(200, RSS))
    resolver = names({"feeds.internal": ["127.0.0.1"]})
    ok, other_port = fetch_all(
        [f"http://feeds.internal:{http_server.port}/feed", "http://feeds.internal/feed"],
        allow=[f"feeds.internal:{http_server.port}"],
        resolver=resolver,
    )
    assert isinstance(ok, FetchResult) and ok.body == RSS
    assert http_server.requests_to("/feed")[0].header("Host") == (
        f"feeds.internal:{http_server.port}"
    )
    assert isinstance(other_port, FetchError)
    assert other_port.message.startswith("refused: address 127.0.0.1 is loopback")


def test_tls_goes_to_the_checked_address_with_the_url_name_for_sni_and_certificate(
    tmp_path: Path,
) -> None:
    """The socket is opened to the IP, but the handshake still names (and verifies) the
    URL's host: the server sees SNI ``feeds.internal``, and its certificate from a CA the
    fetcher does not trust is refused."""
    import ssl
    import threading

    from tests.test_delivery_tls import _certificates

    _ca, cert, key = _certificates(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    seen: list[str | None] = []

    def sni(_sock: object, name: str | None, _ctx: object) -> None:
        seen.append(name)

    server_ctx.sni_callback = sni
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]

    def serve() -> None:
        conn, _ = lsock.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    network = LoopbackOnly()
    try:
        err = refused(
            f"https://feeds.internal:{port}/feed",
            allow=[f"feeds.internal:{port}"],
            resolver=names({"feeds.internal": ["127.0.0.1"]}),
            network=network,
        )
        thread.join(timeout=5)
    finally:
        lsock.close()
    assert seen == ["feeds.internal"]
    assert "CERTIFICATE_VERIFY_FAILED" in err.message
    assert network.asked == [("127.0.0.1", port)]


# -- through the fetch step and feeds.yaml -------------------------------------------------------


def test_fetch_step_stores_the_refusal_per_source_and_fetches_the_listed_server(
    write_config: Callable[..., Config], http_server: HTTPServer, tmp_path: Path
) -> None:
    http_server.route("/feed", Response(200, RSS))
    http_server.route("/hop", Response(301, b"", {"Location": "http://localhost:5432/"}))
    cfg = write_config(
        f"fetch: {{retries: 2, connect_timeout: 1, {allow_private(http_server)}}}\n"
        "sources:\n"
        f'  - {{id: ok, region: joensuu, language: fi, url: "{http_server.url}/feed"}}\n'
        f'  - {{id: hop, region: joensuu, language: fi, url: "{http_server.url}/hop"}}\n'
        '  - {id: db, region: joensuu, language: fi, url: "http://127.0.0.1:5432/"}\n'
    )
    assert cfg.fetch.allow_private == [http_server.address]
    db = Database(f"sqlite:///{tmp_path}/ssrf.db")
    try:
        report = run_fetch(db, cfg, now=NOW)
        by_source = {r["source"]: r for r in report.to_json()["results"]}
        assert by_source["ok"]["status"] == "ok"
        for sid in ("hop", "db"):
            assert by_source[sid]["status"] == "failed"
            assert str(by_source[sid]["error"]).startswith("refused: address "), sid
            assert "is loopback (fetch.allow_private), connecting to " in str(
                by_source[sid]["error"]
            )
        assert len(http_server.requests_to("/hop")) == 1  # not retried in the run
        with db.session() as s:
            row = s.get(Source, "db")
            assert row is not None and row.consecutive_failures == 1
            assert row.last_error is not None and row.last_error.startswith("refused:")
            assert row.next_attempt_at is not None and row.next_attempt_at > NOW
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("127.0.0.1", "is not host:port"),
        ("::1:8080", "an IPv6 address in []"),
        ("[::1]8080", "is not host:port"),
        ("localhost:0", "the port must be a number from 1 to 65535"),
        ("localhost:http", "the port must be a number from 1 to 65535"),
        ("2130706433:80", "write the address as 127.0.0.1"),
        ("a host:80", "is not a host name or IP address"),
    ],
)
def test_allow_private_entries_are_checked_at_load(
    write_config: Callable[..., Config], entry: str, complaint: str
) -> None:
    with pytest.raises(ConfigError) as info:
        write_config(f'fetch:\n  allow_private: ["{entry}"]\n')
    text = str(info.value)
    assert "feeds.yaml:" in text and "fetch.allow_private" in text and complaint in text


def test_allow_private_entries_are_kept_in_standard_form(
    write_config: Callable[..., Config],
) -> None:
    cfg = write_config('fetch: {allow_private: ["Feeds.Internal.:8080", "[0:0::1]:80"]}\n')
    assert cfg.fetch.allow_private == ["feeds.internal:8080", "[::1]:80"]


# -- (g) the pure policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7F.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("167772165", "10.0.0.5"),
        ("0xa.0.0.5", "10.0.0.5"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("::ffff:7f00:1", "::ffff:127.0.0.1"),
        ("[::1]", "::1"),
        ("[fe80::1%eth0]", "fe80::1%eth0"),
        ("localhost", None),
        ("example.org", None),
        ("cafe", None),
        ("1.example", None),
        ("0x.example", None),
        ("", None),
    ],
)
def test_host_address_reads_every_spelling_of_an_ip(host: str, address: str | None) -> None:
    got = host_address(host)
    assert got == (None if address is None else ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("2130706433", "loopback"),
        ("0177.0.0.1", "loopback"),
        ("0x7f.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::1]", "loopback"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("10.0.0.5", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("167772165", "private"),
        ("[fc00::1]", "private"),
        ("[fdff::1]", "private"),
        ("[::ffff:192.168.0.1]", "private"),
        ("169.254.169.254", "link-local"),
        ("0251.0376.0251.0376", "link-local"),
        ("[fe80::1]", "link-local"),
        ("[febf::1]", "link-local"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("100.127.255.255", "shared (carrier-grade NAT)"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("[ff02::1]", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0", "unspecified"),
        ("[::]", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("[64:ff9b::a00:5]", "reserved"),  # NAT64 of 10.0.0.5
        ("100.128.0.1", None),
        ("8.8.8.8", None),
        ("[2606:4700::1111]", None),
    ],
)
def test_refusal_reason_classifies_every_spelling(host: str, kind: str | None) -> None:
    address = host_address(host)
    assert address is not None
    assert refusal_reason(address) == kind


def test_an_entry_allows_exactly_its_host_and_port() -> None:
    lo = ipaddress.ip_address("127.0.0.1")
    entry = parse_allowed("127.0.0.1:8765")
    assert entry == Allowed("127.0.0.1", 8765, lo)
    assert entry.matches("127.0.0.1", 8765, lo)
    assert not entry.matches("127.0.0.1", 8766, lo)
    assert not entry.matches("localhost", 8765, lo)
    assert not entry.matches("2130706433", 8765, lo)
    assert not entry.matches("::ffff:127.0.0.1", 8765, ipaddress.ip_address("::ffff:127.0.0.1"))
    name = parse_allowed("feeds.internal:8080")
    ten = ipaddress.ip_address("10.0.0.5")
    assert name.matches("FEEDS.internal.", 8080, ten)
    assert not name.matches("feeds.internal", 80, ten)
    assert not name.matches("other.internal", 8080, ten)
    v6 = parse_allowed("[::1]:8080")
    assert v6.matches("::1", 8080, ipaddress.ip_address("::1"))
    assert v6.host_port == "[::1]:8080"


def test_the_policy_refuses_with_one_plain_sentence() -> None:
    policy = AddressPolicy(["127.0.0.1:8765"])
    policy.check("127.0.0.1", 8765, ipaddress.ip_address("127.0.0.1"))
    policy.check("example.org", 443, ipaddress.ip_address("8.8.8.8"))  # global: no entry needed
    with pytest.raises(AddressRefused) as info:
        policy.check("fc00::1", 80, ipaddress.ip_address("fc00::1"))
    assert str(info.value) == (
        "refused: address fc00::1 is private (fetch.allow_private), connecting to [fc00::1]:80"
    )
