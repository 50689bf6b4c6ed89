"""SSRF guard: decide which addresses untrusted URLs may reach, and enforce it at connect time.

Search results and redirects are chosen by strangers, so a URL may point at the cloud metadata
service, a database on the private network or the machine itself. Checking the URL text is not
enough: a host name can resolve to anything, and can resolve differently a second later (DNS
rebinding). So the check lives in the network backend under httpx: every TCP connection resolves
its host once, refuses if any address is non-public, and connects to exactly the address it
checked. The TLS handshake still uses the host name (SNI and certificate check), and httpx sends
the original Host header, so pinning the address changes nothing for an honest server.

Redirects need no extra code here: every hop opens (or reuses, for the same origin) a connection
through this backend, so each new host is checked again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpcore
import httpx

from retlink.core.errors import BackendError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: resolve(host, port) -> addresses; injectable so tests can play a rebinding DNS server.
Resolver = Callable[[str, int], Awaitable[list[str]]]

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Named explicitly so that the refusal says what was hit; most are also covered by the
# generic private / link-local checks below.
_METADATA = {
    ipaddress.ip_address("169.254.169.254"): "cloud metadata service",
    ipaddress.ip_address("169.254.170.2"): "cloud metadata service (ECS)",
    ipaddress.ip_address("100.100.100.200"): "cloud metadata service (Alibaba)",
    ipaddress.ip_address("fd00:ec2::254"): "cloud metadata service (AWS IPv6)",
}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class BlockedAddressError(BackendError):
    """A URL or a connection was refused by the SSRF guard (never retried)."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why `address` must not be contacted, or None when it is a public unicast address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "scoped IPv6 address"
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = blocked_reason(inner)
            return f"{reason} (embedded in IPv6 {ip})" if reason else None
    if ip in _METADATA:
        return _METADATA[ip]
    checks = (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("shared address space", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED),
        ("not globally routable", not ip.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"{name} address"
    return None


def _normalise_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class HostPolicy:
    """Which hosts may be non-public: entries are `host` or `host:port` (IPv6 as `[::1]:port`).

    Matching is on the host as written in the URL, not on what it resolves to: allowing
    `127.0.0.1:8080` does not allow `localhost`, another port, or a name that resolves there.
    """

    allow: frozenset[tuple[str, int | None]] = field(default_factory=frozenset)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> HostPolicy:
        parsed: set[tuple[str, int | None]] = set()
        for entry in entries:
            parts = urlsplit(f"//{entry.strip()}")
            if not parts.hostname:
                raise ValueError(f"allow_hosts entry {entry!r} is not a host or host:port")
            parsed.add((_normalise_host(parts.hostname), parts.port))
        return cls(frozenset(parsed))

    def allows(self, host: str, port: int | None) -> bool:
        h = _normalise_host(host)
        return (h, None) in self.allow or (h, port) in self.allow

    def with_hosts(self, *urls: str) -> HostPolicy:
        """This policy plus the hosts (with ports) of the given URLs: for configured services."""
        extra = set(self.allow)
        for url in urls:
            parts = urlsplit(url)
            if parts.hostname:
                extra.add((_normalise_host(parts.hostname), parts.port or _default_port(parts.scheme)))
        return HostPolicy(frozenset(extra))


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme)


def check_url(url: str | httpx.URL) -> httpx.URL:
    """Refuse what can be refused from the text alone: bad syntax, non-http(s), no host,
    credentials in the URL. Addresses are checked when the connection is made."""
    try:
        u = httpx.URL(str(url))
    except (httpx.InvalidURL, ValueError) as e:
        raise BlockedAddressError(f"invalid URL {str(url)[:200]!r}: {e}") from None
    if u.scheme not in ALLOWED_SCHEMES:
        raise BlockedAddressError(f"scheme {u.scheme!r} is not allowed (only http and https): {url}")
    if not u.host:
        raise BlockedAddressError(f"URL has no host: {url}")
    if u.userinfo:
        raise BlockedAddressError(
            f"URL carries credentials, refused: {u.copy_with(username=None, password=None)}"
        )
    return u


async def system_resolve(host: str, port: int) -> list[str]:
    """All addresses the system resolver gives for host (IP literals in any form included)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that resolves, checks and pins the address of every connection."""

    def __init__(
        self,
        policy: HostPolicy,
        *,
        resolver: Resolver = system_resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._resolve = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def checked_addresses(self, host: str, port: int, timeout: float | None = None) -> list[str]:
        """Resolve host once and return its addresses, or raise if the host is refused.

        Any non-public address in the answer refuses the host (unless allowlisted): a
        name that mixes public and private answers is an attack, not a deployment.
        """
        try:
            addresses = await asyncio.wait_for(self._resolve(host, port), timeout)
        except (OSError, TimeoutError) as e:
            raise httpcore.ConnectError(f"cannot resolve {host}: {e or 'timed out'}") from e
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
        if not self.policy.allows(host, port):
            for address in addresses:
                reason = blocked_reason(address)
                if reason:
                    raise BlockedAddressError(
                        f"refused {host}:{port}: resolves to {address}, a {reason} (not in allow_hosts)"
                    )
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to one of the checked addresses, in resolver order (IPv6 first where the
        resolver says so, then the next on failure); never to a name, so no second lookup."""
        addresses = await self.checked_addresses(host, port, timeout)
        error: Exception | None = None
        for address in addresses:
            log.debug("connect %s:%s pinned to %s", host, port, address)
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise BlockedAddressError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx transport whose every connection goes through GuardedNetworkBackend.

    httpx does not take a network backend, so the httpcore pool is rebuilt with one; the
    environment's proxies are ignored (trust_env=False), since a proxy would connect for us.
    """

    def __init__(
        self,
        policy: HostPolicy,
        *,
        limits: httpx.Limits = httpx.Limits(max_connections=32, max_keepalive_connections=16),
        resolver: Resolver = system_resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        super().__init__(limits=limits, trust_env=False)
        self.network_backend = GuardedNetworkBackend(policy, resolver=resolver, inner=inner)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=self.network_backend,
        )
