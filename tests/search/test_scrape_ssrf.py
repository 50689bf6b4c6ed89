"""The SSRF guard end to end: real loopback servers, real httpx, the real scraper.

Loopback stands for every non-public address here: the tests allowlist exactly the main fake
server (127.0.0.1:<its port>), so the second server ("internal") plays a private service that a
page or a redirect tries to reach.
"""

from __future__ import annotations

import httpcore
import pytest

from retlink.tools.scrape import FetchError, build_scraper


async def _fetch_error(scraper, url: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        await scraper.fetch(url)
    return info.value


async def test_loopback_is_refused_without_allowlist(site, search_cfg) -> None:
    scraper = build_scraper(search_cfg(allow_hosts=[]))
    before = site.server.total_hits()
    err = await _fetch_error(scraper, site.url("/article/chelsea-cat"))
    assert err.kind == "blocked"
    assert "loopback" in err.detail
    assert site.server.total_hits() == before  # refused before a single byte was sent


async def test_allowlisted_host_and_port_is_fetched(site, search_cfg) -> None:
    page = await build_scraper(search_cfg()).fetch(site.url("/article/chelsea-cat"))
    assert "scikit-image" in page.text


@pytest.mark.parametrize(
    "host",
    ["localhost", "2130706433", "0x7f.0.0.1", "127.1", "[::ffff:127.0.0.1]", "[::1]"],
)
async def test_other_spellings_of_loopback_are_refused(site, search_cfg, host: str) -> None:
    before = site.server.total_hits()
    err = await _fetch_error(
        build_scraper(search_cfg()), f"http://{host}:{site.server.port}/article/chelsea-cat"
    )
    assert err.kind in {"blocked", "connect"}  # connect: [::1] where the box has no IPv6 loopback
    if err.kind == "connect":
        assert host == "[::1]"
    assert site.server.total_hits() == before


async def test_redirect_to_a_private_service_is_refused(site, search_cfg) -> None:
    before = site.internal.total_hits()
    scraper = build_scraper(search_cfg())
    for fault in ("to-internal", "to-localhost"):
        err = await _fetch_error(scraper, site.url(f"/fault/{fault}"))
        assert err.kind == "blocked", err
    assert site.internal.total_hits() == before


async def test_redirect_to_cloud_metadata_is_refused(site, search_cfg) -> None:
    err = await _fetch_error(build_scraper(search_cfg()), site.url("/fault/to-metadata"))
    assert err.kind == "blocked"
    assert "169.254.169.254" in err.detail
    assert "metadata" in err.detail


async def test_redirect_to_a_non_http_scheme_is_refused(site, search_cfg) -> None:
    err = await _fetch_error(build_scraper(search_cfg()), site.url("/fault/to-file"))
    assert err.kind == "blocked"
    assert "scheme" in err.detail


class FakeRebindingDns:
    """A hostile DNS server: a public address for the first lookup, loopback afterwards."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return ["93.184.216.34"] if len(self.lookups) == 1 else ["127.0.0.1"]


class RecordingOfflineInternet(httpcore.AsyncNetworkBackend):
    """Stands for the unreachable public internet: records where it was asked to connect."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.connects.append((host, port))
        raise httpcore.ConnectError("network unreachable (offline test)")


async def test_dns_rebinding_cannot_reach_loopback(site, search_cfg) -> None:
    """The address checked is the address connected to; the retry resolves again and is checked again."""
    from retlink.tools.net_guard import HostPolicy
    from retlink.tools.scrape.fetch import Fetcher, FetchSettings

    dns, internet = FakeRebindingDns(), RecordingOfflineInternet()
    cfg = search_cfg(allow_hosts=[], retries=1)
    fetcher = Fetcher(
        FetchSettings.from_config(cfg, backoff_s=0.01), HostPolicy(), resolver=dns, inner_backend=internet
    )
    before = site.server.total_hits()
    with pytest.raises(FetchError) as info:
        await fetcher.get(f"http://rebind.example:{site.server.port}/article/chelsea-cat")
    # first connection: pinned to the public address it resolved (never the name, never loopback)
    assert internet.connects == [("93.184.216.34", site.server.port)]
    # the retry resolved to loopback and was refused before connecting
    assert dns.lookups == ["rebind.example", "rebind.example"]
    assert info.value.kind == "blocked"
    assert site.server.total_hits() == before
    await fetcher.aclose()


async def test_pinned_connection_keeps_the_host_header(site, search_cfg) -> None:
    """Connecting to the pinned IP must not change what the server sees as the host."""

    async def fake_dns(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    port = site.server.port
    scraper = build_scraper(search_cfg(allow_hosts=[f"wiki.internal.test:{port}"]), resolver=fake_dns)
    page = await scraper.fetch(f"http://wiki.internal.test:{port}/article/eiffel-tower")
    assert "Gustave Eiffel" in page.text
    hosts = [h.get("Host") for path, h in site.server.headers_seen if path == "/article/eiffel-tower"]
    assert f"wiki.internal.test:{port}" in hosts


class FirstAddressUnreachable(httpcore.AsyncNetworkBackend):
    """Fake of a network where the first resolved address is down; the rest is real loopback."""

    def __init__(self, dead: str) -> None:
        self.dead = dead
        self.connects: list[str] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.connects.append(host)
        if host == self.dead:
            raise httpcore.ConnectError("no route to host (fake)")
        return await self._real.connect_tcp(host, port, timeout=timeout)


async def test_connection_falls_back_to_the_next_checked_address(site, search_cfg) -> None:
    from retlink.tools.net_guard import HostPolicy
    from retlink.tools.scrape.fetch import Fetcher, FetchSettings

    async def two_addresses(host: str, port: int) -> list[str]:
        return ["192.0.2.7", "127.0.0.1"]

    port = site.server.port
    network = FirstAddressUnreachable("192.0.2.7")
    policy = HostPolicy.from_entries([f"dual.test:{port}"])
    fetcher = Fetcher(
        FetchSettings.from_config(search_cfg()), policy, resolver=two_addresses, inner_backend=network
    )
    raw = await fetcher.get(f"http://dual.test:{port}/article/chelsea-cat")
    assert raw.status == 200
    assert network.connects == ["192.0.2.7", "127.0.0.1"]
    await fetcher.aclose()


def test_one_scraper_serves_callers_that_each_run_their_own_loop(site, search_cfg) -> None:
    """Sync callers may wrap each call in asyncio.run: clients are per loop, old ones dropped."""
    import asyncio

    scraper = build_scraper(search_cfg())
    for slug in ("chelsea-cat", "chelsea-fc", "eiffel-tower"):
        page = asyncio.run(scraper.fetch(site.url(f"/article/{slug}")))
        assert page.title
    assert len(scraper.fetcher._states) == 1  # the two closed loops' clients were dropped
