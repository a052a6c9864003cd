"""Which addresses the fetcher may connect to: the pure policy (``config`` reads
``fetch.allow_private`` with it; :mod:`newsexchange.ingest.guard` applies it to every
connection the fetcher opens).

A feed (or a redirect it sends) could otherwise point the service at itself or at its
neighbours: ``http://127.0.0.1:5432/``, ``http://169.254.169.254/`` (cloud metadata),
``http://localhost:8080/metrics``; the page's text would then be mailed out in a digest and
published in the archive. So the fetcher connects only to globally routable addresses, and to
the exceptions the operator lists in ``fetch.allow_private`` (``host:port``).

The check is made where the connection is opened, not on the URL: ``GuardedBackend``
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
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: 100.64.0.0/10, carrier-grade NAT (RFC 6598). ``ipaddress`` leaves it out of ``is_private``.
SHARED = ipaddress.IPv4Network("100.64.0.0/10")

_NAME = re.compile(
    r"^(?=.{1,253}\.?$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
    r"(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$"
)
_NUMERIC_V4 = re.compile(r"^[0-9a-fA-FxX.]+$")


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
