"""The fetcher's limits come from `SearchConfig` only: its defaults are the one source (a second set
in `FetchSettings` had drifted: its user agent was not the config's), and a configured value is
the value the scraper uses on the wire. Real HTTP on 127.0.0.1 (the search tests' server)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from retlink.core.schema import SearchConfig
from retlink.tools.scrape.fetch import FetchError, FetchSettings
from retlink.tools.scrape.scraper import build_scraper

#: FetchSettings field -> the SearchConfig field it is read from
FROM_CONFIG = {
    "connect_timeout_s": "connect_timeout_s",
    "read_timeout_s": "read_timeout_s",
    "page_timeout_s": "page_timeout_s",
    "max_bytes": "max_page_bytes",
    "max_redirects": "max_redirects",
    "retries": "retries",
    "max_concurrency": "max_concurrency",
    "per_host_concurrency": "per_host_concurrency",
    "content_types": "content_types",
    "user_agent": "user_agent",
    "ca_bundle": "ca_bundle",
}


def test_every_setting_but_the_backoff_is_read_from_the_config_and_has_no_default_of_its_own():
    fields = {f.name: f for f in dataclasses.fields(FetchSettings)}
    assert set(fields) - set(FROM_CONFIG) == {"backoff_s"}  # the one setting the config lacks
    assert all(fields[name].default is dataclasses.MISSING for name in FROM_CONFIG)
    with pytest.raises(TypeError):
        FetchSettings()  # no second set of defaults to drift
    defaults = FetchSettings.from_config(SearchConfig())
    assert defaults.user_agent == "retlink/0.1 (entity-linking research agent)"  # the drifted one
    assert (defaults.max_bytes, defaults.content_types) == (2_000_000, ("text/html", "application/xhtml+xml", "text/plain"))


def test_overrides_replace_only_what_they_name():
    cfg = SearchConfig(user_agent="ua/2", retries=3)
    s = FetchSettings.from_config(cfg, max_bytes=4096, backoff_s=0.0)
    assert (s.user_agent, s.retries, s.max_bytes, s.backoff_s) == ("ua/2", 3, 4096, 0.0)
    assert s.max_redirects == cfg.max_redirects == 5


_ROUTE_IDS = itertools.count()


async def test_the_scraper_sends_and_enforces_the_configured_values(servers, search_cfg):
    server = servers[0]
    prefix = f"/fetch-settings-{next(_ROUTE_IDS)}"
    attempts = {"flaky": 0}

    def route(h, rest: str, q: dict) -> None:
        if rest == "/plain":
            h.send_plain(200, "text/plain", b"a small plain page")
        elif rest == "/big":
            h.send_plain(200, "text/plain", b"x" * 5000)
        elif rest == "/html":
            h.send_plain(200, "text/html", b"<p>html</p>")
        elif rest == "/hop1":
            h.redirect(f"{prefix}/plain")
        elif rest == "/hop2":
            h.redirect(f"{prefix}/hop1")
        elif rest == "/flaky":
            attempts["flaky"] += 1
            h.send_plain(503, "text/plain", b"busy")

    server.routes.insert(0, (prefix, route))
    cfg = search_cfg(
        user_agent="retlink-test/7 (configured)",
        max_page_bytes=4096,
        max_redirects=1,
        retries=2,
        content_types=["text/plain"],
    )
    scraper = build_scraper(cfg)
    get = scraper.fetcher.get
    try:
        page = await get(f"{server.base}{prefix}/plain")
        assert page.body == b"a small plain page"
        agents = {h.get("User-Agent") for path, h in server.headers_seen if path == f"{prefix}/plain"}
        assert agents == {"retlink-test/7 (configured)"}
        assert (await get(f"{server.base}{prefix}/hop1")).body == b"a small plain page"  # 1 redirect: allowed
        for path, kind in (("/big", "too_large"), ("/html", "content_type"), ("/hop2", "redirect")):
            with pytest.raises(FetchError) as err:
                await get(f"{server.base}{prefix}{path}")
            assert err.value.kind == kind, (path, err.value)
        with pytest.raises(FetchError):
            await get(f"{server.base}{prefix}/flaky")
        assert attempts["flaky"] == 3  # the first try and the 2 configured retries
    finally:
        await scraper.aclose()
        server.routes.remove((prefix, route))
