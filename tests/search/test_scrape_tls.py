"""https end to end: a real TLS server on 127.0.0.1 with certificates made for the session.

The server certificate is signed by a test CA and names `scrape.test` and 127.0.0.1; scrapers
trust that CA through `search.ca_bundle`. The SSRF guard pins every connection to the address
it checked, so these tests also show that the handshake still names the host (SNI) and checks
the certificate against the name in the URL, not against the pinned address.
"""

from __future__ import annotations

import pytest

from retlink.core.errors import ConfigError
from retlink.core.schema import SearchBackendConfig
from retlink.tools.net_guard import system_resolve
from retlink.tools.scrape import Budget, FetchError, build_scraper
from retlink.tools.search.factory import build_search_backends
from retlink.tools.search.gather import gather_evidence


async def fake_dns(host: str, port: int) -> list[str]:
    """`*.test` names resolve to loopback; everything else as usual."""
    return ["127.0.0.1"] if host.endswith(".test") else await system_resolve(host, port)


async def _fetch_error(scraper, url: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        await scraper.fetch(url)
    return info.value


async def test_https_page_is_fetched_and_extracted_when_its_ca_is_trusted(tls_site, search_cfg, pki) -> None:
    server = tls_site.server
    scraper = build_scraper(search_cfg(allow_hosts=[f"127.0.0.1:{server.port}"], ca_bundle=pki.ca))
    url = tls_site.url("/article/chelsea-fc")
    assert url.startswith("https://")
    page = await scraper.fetch(url)
    assert "Stamford Bridge" in page.text
    assert "Accept all cookies" not in page.text
    assert page.date == "2023-08-11"
    assert page.final_url == url
    await scraper.aclose()


async def test_https_redirect_and_gzip_stay_on_tls(tls_site, search_cfg, pki) -> None:
    server = tls_site.server
    server.routes.insert(0, ("/moved/eiffel", lambda h, p, q: h.redirect("/gz/eiffel-tower", 301)))
    scraper = build_scraper(search_cfg(allow_hosts=[f"127.0.0.1:{server.port}"], ca_bundle=pki.ca))
    page = await scraper.fetch(tls_site.url("/moved/eiffel"))
    assert "Gustave Eiffel" in page.text
    assert page.final_url == tls_site.url("/gz/eiffel-tower")


async def test_pinned_address_still_sends_sni_and_checks_the_host_name(tls_site, search_cfg, pki) -> None:
    server = tls_site.server
    port = server.port
    cfg = search_cfg(allow_hosts=[f"scrape.test:{port}", f"wrong.test:{port}"], ca_bundle=pki.ca)
    scraper = build_scraper(cfg, resolver=fake_dns)

    page = await scraper.fetch(f"https://scrape.test:{port}/article/eiffel-tower")
    assert "Gustave Eiffel" in page.text
    assert "scrape.test" in server.server_names  # SNI names the host, not the pinned 127.0.0.1
    hosts = [h.get("Host") for path, h in server.headers_seen if path == "/article/eiffel-tower"]
    assert f"scrape.test:{port}" in hosts

    # same address, same certificate, but a name the certificate does not cover
    before = server.total_hits()
    err = await _fetch_error(scraper, f"https://wrong.test:{port}/article/eiffel-tower")
    assert err.kind == "tls"
    assert "wrong.test" in err.detail
    assert server.total_hits() == before  # no request was sent over the refused connection


async def test_untrusted_self_signed_certificate_is_refused_clearly(self_signed_site, search_cfg, pki) -> None:
    server = self_signed_site.server
    scraper = build_scraper(
        search_cfg(allow_hosts=[f"127.0.0.1:{server.port}"], ca_bundle=pki.ca, retries=2)
    )
    connections, hits = server.connections, server.total_hits()
    err = await _fetch_error(scraper, self_signed_site.url("/article/chelsea-cat"))
    assert err.kind == "tls"
    assert "self-signed" in err.detail or "self signed" in err.detail, err.detail
    assert str(err).startswith(self_signed_site.url("/article/chelsea-cat") + ": [tls] TLS handshake with")
    assert server.connections == connections + 1  # a certificate problem is not retried
    assert server.total_hits() == hits


async def test_a_ca_signed_certificate_is_refused_without_the_ca_bundle(tls_site, search_cfg) -> None:
    scraper = build_scraper(search_cfg(allow_hosts=[f"127.0.0.1:{tls_site.server.port}"]))
    err = await _fetch_error(scraper, tls_site.url("/article/chelsea-cat"))
    assert err.kind == "tls"
    assert "local issuer" in err.detail, err.detail  # certifi does not know the test CA


async def test_a_refused_certificate_does_not_break_the_search(
    tls_site, self_signed_site, searxng, search_cfg, pki
) -> None:
    good, bad = tls_site.url("/article/eiffel-tower"), self_signed_site.url("/article/chelsea-cat")
    searxng.results["tls mix"] = [
        {"url": url, "title": "t", "content": "snippet"} for url in (bad, good)
    ]
    cfg = search_cfg(
        backends=[SearchBackendConfig(kind="searxng", url=searxng.base)],
        allow_hosts=[f"127.0.0.1:{tls_site.server.port}", f"127.0.0.1:{self_signed_site.server.port}"],
        ca_bundle=pki.ca,
    )
    result = await gather_evidence(
        "tls mix",
        build_search_backends(cfg),
        k=5,
        scraper=build_scraper(cfg),
        budget=Budget(max_pages=5, seconds=8),
    )
    assert [e.url for e in result.evidence] == [good]
    (line,) = result.failures
    assert line.startswith(f"{bad}: [tls]"), line


async def test_ssrf_guard_refuses_loopback_https_before_connecting(tls_site, search_cfg, pki) -> None:
    server = tls_site.server
    connections = server.connections
    scraper = build_scraper(search_cfg(allow_hosts=[], ca_bundle=pki.ca))
    err = await _fetch_error(scraper, tls_site.url("/article/chelsea-cat"))
    assert err.kind == "blocked"
    assert "loopback" in err.detail
    # a name resolving to loopback is refused too, even with 127.0.0.1:<port> allowlisted
    scraper = build_scraper(
        search_cfg(allow_hosts=[f"127.0.0.1:{server.port}"], ca_bundle=pki.ca), resolver=fake_dns
    )
    err = await _fetch_error(scraper, f"https://scrape.test:{server.port}/article/chelsea-cat")
    assert err.kind == "blocked"
    assert "127.0.0.1" in err.detail
    assert server.connections == connections  # not even a TCP connection, let alone a handshake


async def test_https_redirects_to_private_services_are_refused(tls_site, search_cfg, pki) -> None:
    scraper = build_scraper(search_cfg(allow_hosts=[f"127.0.0.1:{tls_site.server.port}"], ca_bundle=pki.ca))
    before = tls_site.internal.total_hits()
    for fault in ("to-internal", "to-localhost", "to-metadata"):
        err = await _fetch_error(scraper, tls_site.url(f"/fault/{fault}"))
        assert err.kind == "blocked", err
    assert tls_site.internal.total_hits() == before


def test_an_unreadable_ca_bundle_is_a_config_error(search_cfg, tmp_path) -> None:
    with pytest.raises(ConfigError, match="ca_bundle"):
        build_scraper(search_cfg(ca_bundle=tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="ca_bundle"):
        build_scraper(search_cfg(ca_bundle=junk))
