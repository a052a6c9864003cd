"""Which addresses the fetcher may connect to: the pure policy, and the httpcore network
backend that applies it to every connection it opens.

A feed (or a redirect it sends) could otherwise point the service at itself or at its
neighbours: ``http://127.0.0.1:5432/``, ``http://169.254.169.254/`` (cloud metadata),
``http://localhost:8080/metrics``; the page's text would then be mailed out in a digest and
published in the archive. So the fetcher connects only to globally routable addresses, and to
the exceptions the operator lists in ``fetch.allow_private`` (``host:port``).

The check is made where the connection is opened, not on the URL: :class:`GuardedBackend`
resolves the name itself (through an injectable resolver), checks *every* address the name
resolves to, then connects to the checked address, so a redirect, an odd spelling
(``2130706433``, ``0x7f.1``, ``[::ffff:127.0.0.1]``) or a name that answers differently on
the next lookup (DNS rebinding) cannot slip past a check made earlier. Nothing is sent to a
refused address, not even a TCP handshake, so the refusal reads the same whether or not
something listens there.

The classification itself uses :mod:`ipaddress`'s own registries (``is_private``,
``is_loopback`` …), not a table of our own.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import anyio
import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: 100.64.0.0/10, carrier-grade NAT (RFC 6598). ``ipaddress`` leaves it out of ``is_private``.
SHARED = ipaddress.IPv4Network("100.64.0.0/10")

_NAME = re.compile(
    r"^(?=.{1,253}\.?$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
    r"(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$"
)
_NUMERIC_V4 = re.compile(r"^[0-9a-fA-FxX.]+$")

#: Resolves ``(host, port)`` to the IP addresses (as text) a connection may go to.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


class AddressRefused(Exception):
    """A connection the policy does not allow; ``str()`` is the per-source error text.

    Deliberately not an ``OSError``: httpcore would turn that into a ``ConnectError``, which
    the fetcher retries as a network hiccup."""


# -- the pure part --------------------------------------------------------------------------


def host_address(host: str) -> IPAddress | None:
    """The address a URL host denotes when it is an IP literal in any spelling, else None.

    Besides the standard forms this reads what the C resolver reads: ``2130706433``,
    ``0177.0.0.1``, ``0x7f.1``, ``127.1`` (``inet_aton``), and ``[::ffff:127.0.0.1]``."""
    h = host.strip().rstrip(".")
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    if h and _NUMERIC_V4.match(h) and any(c.isdigit() for c in h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why the fetcher must not connect to ``address`` ("loopback", "private" …), or None
    when it is a globally routable unicast address.

    An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, 6to4
    ``2002:aabb:ccdd::``) is judged by the IPv4 address it reaches."""
    ip: IPAddress = address
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is not None:
            ip = inner
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in SHARED:
        return "shared (carrier-grade NAT)"
    if ip.is_reserved:  # before is_private, which also covers 240.0.0.0/4 and the like
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class Allowed:
    """One ``fetch.allow_private`` entry: exactly this host (an IP or a name) and port."""

    host: str  # lowercase name, or the address in standard form
    port: int
    ip: IPAddress | None  # set when the entry names an address

    @property
    def host_port(self) -> str:
        """The entry as written in standard form: ``127.0.0.1:8765``, ``[::1]:8765``."""
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return f"{host}:{self.port}"

    def matches(self, url_host: str, port: int, connected: IPAddress) -> bool:
        """Whether a connection for ``url_host:port`` to ``connected`` is this exception.

        The URL must name the host as the entry does (an address entry: the same address,
        written in standard form, so ``2130706433`` or ``localhost`` do not reach an
        allowed ``127.0.0.1``) and the port must be the same; for an address entry the
        connected address must be that address too."""
        if port != self.port:
            return False
        if self.ip is None:
            return url_host.lower().rstrip(".") == self.host
        h = url_host[1:-1] if url_host.startswith("[") else url_host
        try:
            named = ipaddress.ip_address(h)
        except ValueError:
            return False
        return named == self.ip and connected == self.ip


def parse_allowed(entry: str) -> Allowed:
    """``"127.0.0.1:8765"``, ``"[::1]:8765"`` or ``"feeds.internal:8080"`` → :class:`Allowed`.

    Raises ValueError saying what is wrong (for the config loader)."""
    text = entry.strip()
    expected = "expected host:port, e.g. 127.0.0.1:8765, [::1]:8765 or feeds.internal:8080"
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{entry!r} is not host:port ({expected})")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            hint = "; an IPv6 address in []" if ":" in host else ""
            raise ValueError(f"{entry!r} is not host:port ({expected}{hint})")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535 ({expected})")
    port = int(port_text)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if isinstance(ip, ipaddress.IPv6Address) and not text.startswith("["):
            raise ValueError(f"{entry!r}: write an IPv6 address in brackets ({expected})")
        return Allowed(host=str(ip), port=port, ip=ip)
    odd = host_address(host)
    if odd is not None:
        raise ValueError(f"{entry!r}: write the address as {odd} ({expected})")
    name = host.lower().rstrip(".")
    if not _NAME.match(name):
        raise ValueError(f"{entry!r}: {host!r} is not a host name or IP address ({expected})")
    return Allowed(host=name, port=port, ip=None)


class AddressPolicy:
    """Refuses every address that :func:`refusal_reason` names, except listed host:ports."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allowed = tuple(parse_allowed(e) for e in allow)

    def check(self, host: str, port: int, address: IPAddress) -> None:
        """Raise :class:`AddressRefused` unless a connection for ``host:port`` may go to
        ``address``."""
        reason = refusal_reason(address)
        if reason is None or any(a.matches(host, port, address) for a in self.allowed):
            return
        shown = f"[{host}]" if ":" in host else host
        raise AddressRefused(
            f"refused: address {address} is {reason} (fetch.allow_private), "
            f"connecting to {shown}:{port}"
        )


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
            return stream
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
