"""Fetch, extract and cache pages in parallel within a budget: what the search node calls.

Composes the parts (fetch.py: safe network; extract.py: trafilatura; cache.py: disk cache) and
adds what only makes sense across pages: the page budget, the deadline, and a failure record
for every URL that did not become a page. Nothing here raises for a bad page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from retlink.core.errors import ConfigError
from retlink.core.schema import SearchConfig
from retlink.tools.net_guard import HostPolicy, Resolver, system_resolve
from retlink.tools.scrape.budget import Budget
from retlink.tools.scrape.cache import PageCache
from retlink.tools.scrape.extract import Page, extract_page
from retlink.tools.scrape.fetch import Fetcher, FetchError, FetchSettings

log = logging.getLogger(__name__)


class Scraper:
    """`await fetch(url) -> Page`, `await fetch_many(urls, budget=...) -> [Page | FetchError]`."""

    def __init__(
        self, fetcher: Fetcher, *, cache: PageCache | None = None, min_text_chars: int = 200
    ) -> None:
        self.fetcher = fetcher
        self.cache = cache
        self.min_text_chars = min_text_chars

    async def fetch(self, url: str) -> Page:
        """One page, from the cache or the network; raises FetchError with a clear kind."""
        if self.cache is not None:
            cached = self.cache.get(url)
            if cached is not None:
                log.debug("cache hit %s", url)
                return cached
        raw = await self.fetcher.get(url)
        page = await asyncio.to_thread(extract_page, raw)
        if page is None:
            raise FetchError("extract", url, f"no readable main text in {raw.final_url}")
        if len(page.text) < self.min_text_chars:
            raise FetchError(
                "too_short", url, f"{len(page.text)} chars of text < minimum {self.min_text_chars}"
            )
        if self.cache is not None:
            self.cache.put(url, page)
        return page

    async def fetch_many(
        self, urls: Sequence[str], *, budget: Budget | None = None
    ) -> list[Page | FetchError]:
        """All pages in parallel (the fetcher's limits apply), in the order of `urls`.

        Pages over the budget's page count are not fetched; pages not done at its deadline are
        cancelled. Both come back as FetchError(kind="budget"), so every URL has an outcome.
        """
        results: list[Page | FetchError] = [FetchError("budget", u, "page budget spent") for u in urls]
        tasks: dict[asyncio.Task, int] = {}
        for i, url in enumerate(urls):
            if budget is None or budget.take_page():
                tasks[asyncio.create_task(self._outcome(url))] = i
        if not tasks:
            return results
        timeout = budget.remaining_s() if budget is not None else None
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
            results[tasks[task]] = FetchError(
                "budget", urls[tasks[task]], f"not finished within the {budget.seconds:g}s budget"
            )
        if pending:
            await asyncio.wait(pending)  # let cancellations finish: no task outlives the call
        for task in done:
            results[tasks[task]] = task.result()
        return results

    async def _outcome(self, url: str) -> Page | FetchError:
        try:
            return await self.fetch(url)
        except FetchError as e:
            log.info("scrape failed: %s", e)
            return e

    async def aclose(self) -> None:
        await self.fetcher.aclose()


def build_scraper(
    cfg: SearchConfig,
    *,
    resolver: Resolver = system_resolve,
    settings: FetchSettings | None = None,
) -> Scraper:
    """The scraper a SearchConfig describes: its limits, its allowlist and its cache."""
    try:
        policy = HostPolicy.from_entries(cfg.allow_hosts)
    except ValueError as e:
        raise ConfigError(f"search.allow_hosts: {e}") from None
    fetcher = Fetcher(settings or FetchSettings.from_config(cfg), policy, resolver=resolver)
    cache = (
        PageCache(cfg.cache_dir, cfg.cache_ttl_s)
        if cfg.cache_dir is not None and cfg.cache_ttl_s > 0
        else None
    )
    return Scraper(fetcher, cache=cache, min_text_chars=cfg.min_text_chars)
