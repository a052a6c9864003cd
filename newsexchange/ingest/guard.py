"""The address policy applied to every connection the fetcher opens: an httpcore network
backend that resolves the name itself, checks every answer with
:class:`~newsexchange.common.addresses.AddressPolicy`, connects to the checked IP and checks
the peer again (the whole story in :mod:`newsexchange.common.addresses`)."""

from __future__ import annotations

import ipaddress
import select
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable, Sequence

import anyio
import httpcore

from newsexchange.common.addresses import AddressPolicy, AddressRefused, IPAddress

__all__ = ["GuardedBackend", "Resolver", "system_resolver"]

#: Resolves ``(host, port)`` to the IP addresses (as text) a connection may go to.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


# -- applying it to every connection ----------------------------------------------------------


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's resolver (``getaddrinfo`` in a worker thread, as anyio does)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, checks, then connects to the checked IP.

    ``inner`` opens the socket to the address (an IP literal, so it resolves nothing); the
    TLS handshake that httpcore runs next still uses the URL's host name for SNI and the
    certificate, and the Host header is untouched. After connecting, the peer address of the
    socket is compared with the address that was checked."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._resolve: Resolver = resolver or system_resolver
        self._inner: httpcore.AsyncNetworkBackend = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else anyio.current_time() + timeout
        addresses = await self._addresses(host, port, timeout)
        # Every answer is checked before any is tried: a name that mixes a public address
        # with an internal one is refused as a whole.
        for ip in addresses:
            self.policy.check(host, port, ip)
        error: Exception | None = None
        for ip in addresses:
            left = None if deadline is None else max(0.0, deadline - anyio.current_time())
            try:
                stream = await self._inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=left,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            peer = stream.get_extra_info("server_addr")
            try:
                connected = ipaddress.ip_address(peer[0]) if peer else None
            except ValueError:
                connected = None
            if connected != ip:
                await stream.aclose()
                raise AddressRefused(
                    f"refused: connected to {peer!r} instead of the checked address {ip}"
                )
            return _Stream(stream, stream.get_extra_info("socket"))
        assert error is not None
        raise error

    async def _addresses(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        """The name's addresses, each once, in the resolver's order."""
        try:
            with anyio.fail_after(timeout):
                answers = await self._resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout:g} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses: list[IPAddress] = []
        for answer in answers:
            ip = ipaddress.ip_address(answer)
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}: no address")
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the fetcher does not connect to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """The inner backend's stream, with a cheaper answer to "is the idle socket readable?".

    httpcore asks it of every idle connection in the pool on every request (a readable idle
    socket means the server closed it). anyio answers through its typed attributes, which
    build a dict of every attribute, ``getpeername`` included, on each call: ~40 % of the
    pool's bookkeeping per request. Here the raw socket is looked up once and polled."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, sock: socket.socket | None) -> None:
        self._inner = inner
        self._sock = sock

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _Stream(tls, self._sock)  # the same socket underneath

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable" and self._sock is not None:
            return _readable(self._sock)
        return self._inner.get_extra_info(info)


def _readable(sock: socket.socket) -> bool:
    """Would ``recv`` return at once (data or the end)? A closed socket counts as readable."""
    fd = sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
