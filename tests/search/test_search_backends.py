"""The search backends against fakes of SearxNG, MediaWiki, Wikidata and Brave on loopback."""

from __future__ import annotations

import pytest

from retlink.core.errors import BackendError, ConfigError
from retlink.core.schema import SearchBackendConfig
from retlink.tools.search.factory import build_search_backends


def _backend(search_cfg, kind: str, url: str, **kw):
    cfg = search_cfg(backends=[SearchBackendConfig(kind=kind, url=url, **kw)], allow_hosts=[])
    return build_search_backends(cfg)[0]


async def test_searxng_hits_come_from_the_json_api(searxng, search_cfg) -> None:
    searxng.results["eiffel tower"] = [
        {
            "url": "https://en.example.org/eiffel",
            "title": "Eiffel <b>Tower</b>",
            "content": "Iron &amp; lattice",
        },
        {"url": "ftp://bad.example/x", "title": "not http"},
        {"url": "https://travel.example.com/paris", "title": "Paris guide"},
    ]
    backend = _backend(search_cfg, "searxng", searxng.base)
    hits = await backend.search("eiffel tower", 5)
    assert [h.url for h in hits] == ["https://en.example.org/eiffel", "https://travel.example.com/paris"]
    assert hits[0].title == "Eiffel Tower"
    assert hits[0].snippet == "Iron & lattice"
    assert [h.rank for h in hits] == [0, 1]
    assert all(h.backend == "searxng" and h.content is None for h in hits)
    assert len(await backend.search("eiffel tower", 1)) == 1


async def test_searxng_malformed_json_is_a_backend_error(searxng, search_cfg) -> None:
    with pytest.raises(BackendError, match="malformed JSON"):
        await _backend(search_cfg, "searxng", searxng.base).search("malformed", 3)


async def test_searxng_reports_unresponsive_engines_when_empty(searxng, search_cfg) -> None:
    searxng.unresponsive = [["google", "timeout"], ["bing", "CAPTCHA"]]
    try:
        with pytest.raises(BackendError, match="google, bing"):
            await _backend(search_cfg, "searxng", searxng.base).search("nothing matches this", 3)
    finally:
        searxng.unresponsive = []


async def test_wikipedia_hits_carry_the_page_summary(mediawiki, search_cfg) -> None:
    mediawiki.pages["Chelsea F.C."] = (
        "English football club",
        "Chelsea Football Club is an English football club.",
    )
    mediawiki.pages["Chelsea, London"] = ("Area of London", "Chelsea is an affluent area in west London.")
    mediawiki.pages["Chelsea (cat)"] = ("sample image", "")
    mediawiki.broken_summaries.add("Chelsea (cat)")
    hits = await _backend(search_cfg, "wikipedia", mediawiki.base).search("chelsea", 3)
    assert [h.title for h in hits] == ["Chelsea F.C.", "Chelsea, London", "Chelsea (cat)"]
    assert hits[0].content == "Chelsea Football Club is an English football club."
    assert hits[0].url == f"{mediawiki.base}/wiki/Chelsea_F.C."
    assert hits[0].snippet == 'Chelsea F.C. is "English football club"'
    # a failed summary leaves a hit the scraper can read instead of losing it
    assert hits[2].content is None
    assert hits[2].url == f"{mediawiki.base}/wiki/Chelsea_%28cat%29"


async def test_wikidata_hits_describe_entities(wikidata, search_cfg) -> None:
    wikidata.entities = [
        {
            "id": "Q9616",
            "label": "Chelsea F.C.",
            "description": "association football club in London",
            "aliases": ["Chelsea FC", "The Blues"],
        },
        {"id": "Q243445", "label": "Chelsea", "description": "area of London", "aliases": []},
    ]
    hits = await _backend(search_cfg, "wikidata", wikidata.base).search("chelsea", 5)
    assert [h.title for h in hits] == ["Chelsea F.C.", "Chelsea"]
    assert (
        hits[0].content
        == "Chelsea F.C. (Q9616): association football club in London. Also known as: Chelsea FC, The Blues."
    )
    assert hits[0].url == f"{wikidata.base}/wiki/Q9616"
    assert hits[1].content == "Chelsea (Q243445): area of London."


async def test_brave_sends_the_key_from_the_environment(brave, search_cfg, monkeypatch) -> None:
    brave.results["stamford bridge"] = [
        {"title": "Stamford Bridge", "url": "https://stadium.example/sb", "content": "home of Chelsea"}
    ]
    monkeypatch.setenv("RETLINK_TEST_BRAVE_KEY", brave.KEY)
    backend = _backend(search_cfg, "brave", brave.base, api_key_env="RETLINK_TEST_BRAVE_KEY")
    hits = await backend.search("stamford bridge", 3)
    assert hits[0].url == "https://stadium.example/sb"
    assert hits[0].snippet == "About stamford bridge: home of Chelsea"
    assert await backend.search("no results here", 3) == []
    assert brave.KEY not in repr(backend)


async def test_brave_with_a_wrong_key_is_a_backend_error(brave, search_cfg) -> None:
    backend = _backend(search_cfg, "brave", brave.base, api_key="wrong")
    with pytest.raises(BackendError, match="HTTP 401"):
        await backend.search("anything", 3)


def test_brave_without_a_key_is_a_config_error(search_cfg, monkeypatch) -> None:
    monkeypatch.delenv("BRAVE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="BRAVE_API_KEY"):
        build_search_backends(search_cfg(backends=[SearchBackendConfig(kind="brave")]))


def test_searxng_without_a_url_is_a_config_error(search_cfg) -> None:
    with pytest.raises(ConfigError, match="needs a 'url'"):
        build_search_backends(search_cfg(backends=[SearchBackendConfig(kind="searxng")]))


async def test_backend_host_is_allowlisted_for_its_own_client_only(searxng, servers, search_cfg) -> None:
    """The configured service may be private; pages it returns on other private hosts may not."""
    from retlink.tools.scrape import FetchError, build_scraper

    internal = servers[1]
    backend = _backend(search_cfg, "searxng", searxng.base)
    searxng.results["secret"] = [{"url": f"{internal.base}/secret", "title": "internal"}]
    (hit,) = await backend.search("secret", 3)
    with pytest.raises(FetchError) as info:
        await build_scraper(search_cfg()).fetch(hit.url)
    assert info.value.kind == "blocked"
