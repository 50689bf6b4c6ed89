"""Each injected fault ends in bounded time with a FetchError that says what happened."""

from __future__ import annotations

import pytest

from retlink.tools.scrape import FetchError, build_scraper

#: every fault must end well within this: far below what the unstopped faults take (the hang
#: 30 s, the drip and the redirect chain forever), far above a loaded machine's scheduling delays
#: on top of the test config's timeouts (read 2 s, page 4 s)
BOUND_S = 15.0


@pytest.mark.parametrize(
    ("fault", "kind", "words"),
    [
        ("hang", "timeout", "no data"),  # the read timeout
        ("500", "http_status", "HTTP 500"),
        ("huge", "too_large", "declared"),
        ("huge-undeclared", "too_large", "stopped reading"),
        ("bad-encoding", "protocol", "'br' is not supported"),
        ("binary", "content_type", "application/octet-stream"),
        ("binary-as-html", "binary", "binary data"),
        ("loop-a", "redirect", "loop"),
        ("chain-0", "redirect", "more than 5 redirects"),
        ("drip", "timeout", "total"),  # the page timeout: each byte beats the read timeout
    ],
)
async def test_fault_ends_in_bounded_time_with_a_clear_error(site, search_cfg, elapsed, fault, kind, words) -> None:
    scraper = build_scraper(search_cfg())
    with elapsed() as t, pytest.raises(FetchError) as info:
        await scraper.fetch(site.url(f"/fault/{fault}"))
    assert info.value.kind == kind, info.value
    assert words in str(info.value)
    assert site.url(f"/fault/{fault}") in str(info.value)
    assert t.s < BOUND_S


async def test_500_is_not_retried(site, search_cfg) -> None:
    before = site.server.hits["/fault/500"]
    with pytest.raises(FetchError):
        await build_scraper(search_cfg(retries=3)).fetch(site.url("/fault/500"))
    assert site.server.hits["/fault/500"] == before + 1


async def test_hang_is_not_retried(site, search_cfg) -> None:
    before = site.server.hits["/fault/hang"]
    with pytest.raises(FetchError):
        await build_scraper(search_cfg(retries=3)).fetch(site.url("/fault/hang"))
    assert site.server.hits["/fault/hang"] == before + 1


async def test_503_is_retried_once_and_then_succeeds(site, search_cfg) -> None:
    page = await build_scraper(search_cfg(retries=1)).fetch(site.url("/fault/503-once"))
    assert "Gustave Eiffel" in page.text
    assert site.server.hits["/fault/503-once"] == 2


async def test_connection_refused_is_a_connect_error(site, search_cfg) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = search_cfg(allow_hosts=[f"127.0.0.1:{port}"], retries=1)
    with pytest.raises(FetchError) as info:
        await build_scraper(cfg).fetch(f"http://127.0.0.1:{port}/")
    assert info.value.kind == "connect"


async def test_page_below_minimum_length_is_dropped(site, search_cfg) -> None:
    with pytest.raises(FetchError) as info:
        await build_scraper(search_cfg(min_text_chars=200)).fetch(site.url("/short"))
    assert info.value.kind == "too_short"


async def test_gzip_bomb_is_stopped_at_the_cap_without_inflating_it(site, search_cfg) -> None:
    import tracemalloc

    scraper = build_scraper(search_cfg(max_page_bytes=1_000_000))
    tracemalloc.start()
    try:
        with pytest.raises(FetchError) as info:
            await scraper.fetch(site.url("/fault/gzip-bomb"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.kind == "too_large"
    assert peak < 8_000_000  # inflating a whole network chunk at once would hold 20 MB


async def test_gzip_pages_are_read(site, search_cfg) -> None:
    page = await build_scraper(search_cfg()).fetch(site.url("/gz/chelsea-fc"))
    assert "Stamford Bridge" in page.text
