"""Fetch one URL safely: the network half of scraping (extraction is elsewhere).

Every limit a hostile or broken server could exploit has a bound here: connect and read timeouts
(a hang), a total per-page timeout (a slow drip that never trips the read timeout), a byte cap
checked while streaming and after bounded decompression (a 10 MB page, a body without
Content-Length, a gzip bomb: see inflate.py), a content-type allowlist
plus a binary sniff (an image or archive served as a page; a caller that wants binary content,
such as the chat endpoint fetching an image URL, passes its own allowlist, e.g. `image/*`, and
`allow_binary=True` per call, and keeps every other limit), redirects followed by hand so each
hop is re-checked and loops are caught, per-host and total concurrency limits, and retries only
where a retry is safe (a refused connection or a 502/503/504 to a GET, never after a timeout,
which would double the wait). Addresses are checked by the SSRF guard in the transport.

https is always verified (certificate chain and host name, against certifi plus the optional
`ca_bundle`); a failed verification is a FetchError of kind `tls`, never retried: a second try
meets the same certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpcore
import httpx

from retlink.core.errors import BackendError, ConfigError
from retlink.tools.net_guard import (
    BlockedAddressError,
    GuardedTransport,
    HostPolicy,
    Resolver,
    check_url,
    system_resolve,
)
from retlink.tools.scrape.inflate import ACCEPT_ENCODING, BoundedInflater, InflateError
from retlink.tools.scrape.urls import normalise_url

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({502, 503, 504})
_SNIFF_BYTES = 4096


class FetchError(BackendError):
    """A page could not be fetched. `kind` is a short stable category for failure records:
    blocked, timeout, connect, tls, http_status, too_large, content_type, binary, redirect, protocol."""

    def __init__(self, kind: str, url: str, detail: str) -> None:
        super().__init__(f"{url}: [{kind}] {detail}")
        self.kind = kind
        self.url = url
        self.detail = detail


@dataclass(frozen=True)
class FetchSettings:
    """The fetch limits. Built by `from_config` from a SearchConfig, the one place their defaults
    live (this class restated them once, and its user agent had drifted from the config's); a
    caller changes one for its own use by a keyword override (the endpoint's image limits)."""

    connect_timeout_s: float
    read_timeout_s: float
    page_timeout_s: float
    max_bytes: int
    max_redirects: int
    retries: int
    max_concurrency: int
    per_host_concurrency: int
    content_types: tuple[str, ...]
    user_agent: str
    #: PEM file of extra CA certificates to trust (added to certifi's); None: certifi only
    ca_bundle: Path | None
    #: first pause before a retry, doubled on each further one (not a config setting)
    backoff_s: float = 0.2

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> FetchSettings:
        """The settings of SearchConfig `cfg`, with `overrides` (FetchSettings field names) in
        place of its values."""
        values = dict(
            connect_timeout_s=cfg.connect_timeout_s,
            read_timeout_s=cfg.read_timeout_s,
            page_timeout_s=cfg.page_timeout_s,
            max_bytes=cfg.max_page_bytes,
            max_redirects=cfg.max_redirects,
            retries=cfg.retries,
            max_concurrency=cfg.max_concurrency,
            per_host_concurrency=cfg.per_host_concurrency,
            content_types=tuple(cfg.content_types),
            user_agent=cfg.user_agent,
            ca_bundle=cfg.ca_bundle,
        )
        values.update(overrides)
        return cls(**values)


def tls_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """The client TLS context: certifi's CAs plus those in `ca_bundle`, chain and host name
    always checked (the SSRF guard pins the address, the handshake still names the host)."""
    ctx = httpx.create_ssl_context(verify=True, trust_env=False)
    if ca_bundle is not None:
        path = Path(ca_bundle).expanduser()
        try:
            ctx.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"search.ca_bundle {str(path)!r} is not a readable PEM CA bundle: {e}"
            ) from None
    return ctx


def _tls_failure(e: BaseException) -> ssl.SSLError | None:
    """The TLS error under an httpx error (httpx wraps httpcore's, which wraps ssl's), if any."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def type_allowed(mime: str, allowed: tuple[str, ...]) -> bool:
    """Whether a media type is in an allowlist whose entries are exact (`text/html`) or a
    whole top-level type (`image/*`)."""
    major = mime.split("/", 1)[0]
    return any(mime == a or (a.endswith("/*") and bool(major) and a[:-2] == major) for a in allowed)


@dataclass(frozen=True)
class _Accept:
    """What one call accepts as a body: its content-type allowlist, and whether binary bytes may
    appear in it (the sniff exists to keep binary out of text pipelines, not out of image fetches)."""

    content_types: tuple[str, ...]
    allow_binary: bool = False


@dataclass
class RawPage:
    """A fetched body with where it finally came from."""

    url: str
    final_url: str
    status: int
    content_type: str
    charset: str | None
    body: bytes
    redirects: list[str] = field(default_factory=list)


class HostSlots:
    """Per-host concurrency limits whose map holds only hosts in use.

    A host's semaphore lives while some request holds or waits for it and is dropped with its
    last user, so the map never holds more hosts than there are requests in flight (bounded by
    the total limit), however many hosts a long-running process meets. The limit itself is
    unchanged: every concurrent request to a host shares the one live semaphore. Single event
    loop only (no lock), like the rest of _LoopState.
    """

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    @contextlib.asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
        sem, users = self._slots.get(host) or (asyncio.Semaphore(self.per_host), 0)
        self._slots[host] = (sem, users + 1)
        try:
            async with sem:
                yield
        finally:
            sem, users = self._slots[host]
            if users == 1:
                del self._slots[host]
            else:
                self._slots[host] = (sem, users - 1)


@dataclass
class _LoopState:
    """Objects bound to one event loop: the client (its connections) and the semaphores."""

    client: httpx.AsyncClient
    total: asyncio.Semaphore
    hosts: HostSlots


class Fetcher:
    """Shared async HTTP client with the limits above; one per role (pages, each search API)."""

    def __init__(
        self,
        settings: FetchSettings,
        policy: HostPolicy,
        *,
        resolver: Resolver = system_resolve,
        inner_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self._tls = tls_context(settings.ca_bundle)  # built once, shared by every loop's client
        self._resolver = resolver
        self._inner_backend = inner_backend
        # One client per event loop: httpx connections cannot cross loops, and callers may run
        # each call in a fresh loop (asyncio.run). States of closed loops are dropped.
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._lock = threading.Lock()

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._states.get(loop)
            if state is None:
                for closed in [old for old in self._states if old.is_closed()]:
                    del self._states[closed]  # its sockets close when the client is collected
                s = self.settings
                limits = httpx.Limits(
                    max_connections=s.max_concurrency * 2, max_keepalive_connections=s.max_concurrency
                )
                transport = GuardedTransport(
                    self.policy,
                    limits=limits,
                    resolver=self._resolver,
                    inner=self._inner_backend,
                    verify=self._tls,
                )
                client = httpx.AsyncClient(
                    transport=transport,
                    follow_redirects=False,
                    trust_env=False,
                    timeout=httpx.Timeout(
                        connect=s.connect_timeout_s,
                        read=s.read_timeout_s,
                        write=s.read_timeout_s,
                        pool=s.page_timeout_s,
                    ),
                    headers={"User-Agent": s.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
                )
                state = _LoopState(
                    client=client,
                    total=asyncio.Semaphore(s.max_concurrency),
                    hosts=HostSlots(s.per_host_concurrency),
                )
                self._states[loop] = state
            return state

    async def aclose(self) -> None:
        """Close the client of the running loop (clients of finished loops die with them)."""
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.client.aclose()

    async def get(
        self,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        content_types: tuple[str, ...] | None = None,
        allow_binary: bool = False,
    ) -> RawPage:
        """GET url within the limits, following redirects by hand; raises FetchError.

        `content_types` replaces the settings' allowlist for this call (entries may be `type/*`);
        `allow_binary` skips the binary sniff. Byte cap, timeouts, redirect checks and the SSRF
        guard stay as they are: the override says what may come back, not from where or how much.
        """
        accept = _Accept(content_types or self.settings.content_types, allow_binary)
        state = self._state()
        async with state.total:
            try:
                async with asyncio.timeout(self.settings.page_timeout_s):
                    return await self._follow(state, url, params, headers, accept)
            except TimeoutError:
                raise FetchError(
                    "timeout", url, f"page not complete within {self.settings.page_timeout_s:g}s (total)"
                ) from None

    async def _follow(self, state: _LoopState, url: str, params, headers, accept: _Accept) -> RawPage:
        seen: set[str] = set()
        redirects: list[str] = []
        current = url
        for _ in range(self.settings.max_redirects + 1):
            try:
                target = check_url(current)
            except BlockedAddressError as e:
                raise FetchError("blocked", url, str(e)) from None
            key = normalise_url(str(target.copy_merge_params(params or {})))
            if key in seen:
                raise FetchError("redirect", url, f"redirect loop back to {current}")
            seen.add(key)
            outcome = await self._hop(state, url, target, params, headers, accept)
            if isinstance(outcome, RawPage):
                outcome.redirects = redirects
                return outcome
            redirects.append(outcome)
            current = outcome
            params = None  # the Location already carries its query
        raise FetchError("redirect", url, f"more than {self.settings.max_redirects} redirects")

    async def _hop(
        self, state: _LoopState, url: str, target: httpx.URL, params, headers, accept: _Accept
    ) -> RawPage | str:
        """One request (with safe retries); a RawPage, or the next URL of a redirect."""
        host = target.host
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            retry = attempt + 1 < attempts
            try:
                async with (
                    state.hosts.hold(host),
                    state.client.stream("GET", target, params=params, headers=headers) as resp,
                ):
                    if resp.is_redirect:
                        location = resp.headers.get("location", "")
                        try:
                            return str(target.join(location))
                        except (httpx.InvalidURL, ValueError):
                            raise FetchError("redirect", url, f"bad Location {location[:200]!r}") from None
                    if resp.status_code in _RETRY_STATUS and retry:
                        log.info("retrying %s after HTTP %d", target, resp.status_code)
                    elif resp.status_code >= 400:
                        raise FetchError("http_status", url, f"HTTP {resp.status_code} from {target}")
                    elif 300 <= resp.status_code < 400:
                        raise FetchError("redirect", url, f"HTTP {resp.status_code} without Location")
                    else:
                        return await self._read(resp, url, target, accept)
            except BlockedAddressError as e:
                raise FetchError("blocked", url, str(e)) from None
            except httpx.ConnectTimeout:
                raise FetchError("timeout", url, f"connect to {host} timed out") from None
            except httpx.TimeoutException as e:
                raise FetchError(
                    "timeout",
                    url,
                    f"no data from {host} for {self.settings.read_timeout_s:g}s ({type(e).__name__})",
                ) from None
            except httpx.ConnectError as e:
                tls = _tls_failure(e)
                if tls is not None:
                    reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or str(tls)
                    raise FetchError("tls", url, f"TLS handshake with {host} failed: {reason}") from None
                if not retry:
                    raise FetchError("connect", url, f"cannot connect to {host}: {e}") from None
                log.info("retrying %s after connect error: %s", target, e)
            except httpx.HTTPError as e:
                raise FetchError("protocol", url, f"{type(e).__name__}: {e}") from None
            await asyncio.sleep(self.settings.backoff_s * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    async def _read(self, resp: httpx.Response, url: str, target: httpx.URL, accept: _Accept) -> RawPage:
        s = self.settings
        ctype = resp.headers.get("content-type", "")
        mime = ctype.split(";", 1)[0].strip().lower()
        if not type_allowed(mime, accept.content_types):
            raise FetchError("content_type", url, f"content type {mime or 'missing'!r} is not allowed")
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > s.max_bytes:
            raise FetchError("too_large", url, f"declared {int(declared)} bytes > cap {s.max_bytes}")
        encoding = resp.headers.get("content-encoding", "identity").strip().lower()
        try:
            inflater = None if encoding in ("", "identity") else BoundedInflater(encoding)
        except InflateError as e:
            raise FetchError("protocol", url, str(e)) from None
        body = bytearray()
        async for raw in resp.aiter_raw():
            try:
                chunk = inflater.feed(raw, s.max_bytes + 1 - len(body)) if inflater else raw
            except InflateError as e:
                raise FetchError("protocol", url, str(e)) from None
            if not accept.allow_binary and len(body) < _SNIFF_BYTES and b"\x00" in chunk[: _SNIFF_BYTES - len(body)]:
                raise FetchError("binary", url, f"binary data in a {mime} body")
            body += chunk
            if len(body) > s.max_bytes:
                raise FetchError("too_large", url, f"body over cap of {s.max_bytes} bytes (stopped reading)")
        return RawPage(
            url=url,
            final_url=str(target),
            status=resp.status_code,
            content_type=mime,
            charset=resp.charset_encoding,
            body=bytes(body),
        )
