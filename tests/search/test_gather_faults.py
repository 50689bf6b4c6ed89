"""gather_evidence end to end: search fakes, real pages, every fault at once, budgets."""

from __future__ import annotations

import asyncio

from retlink.core.schema import SearchBackendConfig
from retlink.tools.scrape import Budget, build_scraper
from retlink.tools.search.factory import build_search_backends
from retlink.tools.search.gather import gather_evidence

FAULTS = {
    "/fault/hang": "[timeout]",
    "/fault/500": "[http_status]",
    "/fault/huge": "[too_large]",
    "/fault/binary": "[content_type]",
    "/fault/binary-as-html": "[binary]",
    "/fault/loop-a": "[redirect]",
    "/fault/to-internal": "[blocked]",
    "/fault/to-metadata": "[blocked]",
    "/fault/drip": "[timeout]",
    "/short": "[too_short]",
}


def _results(site, paths: list[str]) -> list[dict]:
    return [{"url": site.url(p), "title": p.rsplit("/", 1)[-1], "content": "snippet"} for p in paths]


async def test_every_fault_at_once_ends_in_bounded_time_with_the_good_evidence(
    site, searxng, search_cfg, elapsed
) -> None:
    good = ["/article/eiffel-tower", "/injection"]
    duplicates = ["/mirror/eiffel-tower", "/article/eiffel-tower?utm_source=feed"]
    searxng.results["eiffel tower facts"] = _results(site, [good[0], *FAULTS, *duplicates, good[1]])
    cfg = search_cfg(backends=[SearchBackendConfig(kind="searxng", url=searxng.base)], max_pages=20)
    with elapsed() as t:
        result = await gather_evidence(
            "eiffel tower facts",
            build_search_backends(cfg),
            k=20,
            scraper=build_scraper(cfg),
            budget=Budget(max_pages=20, seconds=30),
        )
    # the slowest faults (hang, drip) are cut by the config's timeouts (read 2 s, page 4 s), not by
    # the budget (their kinds say so below) and not after the 30 s the hang would take
    assert t.s < 20.0
    assert [e.url for e in result.evidence] == [site.url(p) for p in good]
    assert all(e.backend == "searxng" and e.query == "eiffel tower facts" for e in result.evidence)
    assert result.evidence[0].date == "2022-05-17"
    assert "Gustave Eiffel" in result.evidence[0].text
    for path, kind in FAULTS.items():
        (line,) = [f for f in result.failures if f.startswith(site.url(path) + ":")]
        assert kind in line, line
    assert len(result.failures) == len(FAULTS)  # duplicates are skipped, not failures


async def test_a_broken_backend_is_recorded_and_the_next_one_answers(searxng, mediawiki, search_cfg) -> None:
    mediawiki.pages["Eiffel Tower"] = (
        "tower in Paris",
        "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
    )
    cfg = search_cfg(
        backends=[
            SearchBackendConfig(kind="searxng", url=searxng.base),
            SearchBackendConfig(kind="wikipedia", url=mediawiki.base),
        ]
    )
    result = await gather_evidence("malformed eiffel", build_search_backends(cfg), k=3)
    assert [e.backend for e in result.evidence] == ["wikipedia"]
    assert result.evidence[0].text.startswith("The Eiffel Tower is a wrought-iron")
    assert len(result.failures) == 1
    assert result.failures[0].startswith("searxng: ") and "malformed JSON" in result.failures[0]


async def test_hits_without_content_need_a_scraper(site, searxng, search_cfg) -> None:
    searxng.results["no scraper"] = _results(site, ["/article/chelsea-cat"])
    cfg = search_cfg(backends=[SearchBackendConfig(kind="searxng", url=searxng.base)])
    result = await gather_evidence("no scraper", build_search_backends(cfg), k=3)
    assert result.evidence == []
    assert result.failures == [
        f"{site.url('/article/chelsea-cat')}: no scraper configured for hits without content"
    ]


async def test_page_budget_is_shared_by_parallel_queries(site, searxng, search_cfg) -> None:
    pages = ["/article/chelsea-cat", "/article/chelsea-fc", "/article/eiffel-tower"]
    searxng.results["query one"] = _results(site, pages)
    searxng.results["query two"] = _results(site, [*reversed(pages), "/mirror/chelsea-cat"])
    cfg = search_cfg(backends=[SearchBackendConfig(kind="searxng", url=searxng.base)])
    backends, scraper, budget = build_search_backends(cfg), build_scraper(cfg), Budget(max_pages=2, seconds=8)
    one, two = await asyncio.gather(
        *(
            gather_evidence(q, backends, k=5, scraper=scraper, budget=budget)
            for q in ("query one", "query two")
        )
    )
    urls = [e.url for e in one.evidence + two.evidence]
    assert len(urls) == len(set(urls)) == 2  # each page once per link, and no more than the budget
    assert budget.pages_used == 2
    spent = [f for f in one.failures + two.failures if "[budget] page budget spent" in f]
    assert len(spent) == 2  # the third distinct page and the mirror


async def test_time_budget_cuts_slow_pages_and_keeps_the_fast_ones(
    site, searxng, search_cfg, elapsed
) -> None:
    # the slow pages take 30 s; the fast one has the whole 3 s budget, plenty on a loaded machine
    searxng.results["slow"] = _results(
        site, ["/fault/hang", "/article/chelsea-fc", "/slow/30000/eiffel-tower"]
    )
    cfg = search_cfg(
        backends=[SearchBackendConfig(kind="searxng", url=searxng.base)],
        read_timeout_s=60.0,
        page_timeout_s=60.0,
    )
    with elapsed() as t:
        result = await gather_evidence(
            "slow",
            build_search_backends(cfg),
            k=5,
            scraper=build_scraper(cfg),
            budget=Budget(max_pages=10, seconds=3),
        )
    assert t.s < 20.0  # the budget cut the 30 s pages
    assert [e.url for e in result.evidence] == [site.url("/article/chelsea-fc")]
    assert sum("[budget] not finished within the 3s budget" in f for f in result.failures) == 2


async def test_spent_time_budget_skips_the_search(searxng, search_cfg) -> None:
    cfg = search_cfg(backends=[SearchBackendConfig(kind="searxng", url=searxng.base)])
    budget = Budget(seconds=0.01)
    await asyncio.sleep(0.02)
    result = await gather_evidence("anything", build_search_backends(cfg), budget=budget)
    assert result.evidence == []
    assert result.failures == ["searxng: [budget] no time left for the search"]


async def test_evidence_fits_the_token_budget(site, searxng, search_cfg) -> None:
    searxng.results["chelsea"] = _results(site, ["/article/chelsea-cat", "/article/chelsea-fc"])
    cfg = search_cfg(backends=[SearchBackendConfig(kind="searxng", url=searxng.base)])
    result = await gather_evidence(
        "chelsea",
        build_search_backends(cfg),
        k=5,
        scraper=build_scraper(cfg),
        max_passage_chars=120,
        max_evidence_tokens=70,
    )
    assert len(result.evidence) == 2  # both pages get their best passage first
    assert sum(len(e.text) for e in result.evidence) <= 70 * 4
