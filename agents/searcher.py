"""search: one planned query -> evidence. The graph runs one branch per query in parallel.

All branches of one link share a `Budget` (pages and seconds), created when the queries are
dispatched; `gather_evidence` stops by itself before the deadline and keeps what it found.
"""

from __future__ import annotations

from typing import Any

from retlink.config import SearchConfig
from retlink.tools.scrape import Budget
from retlink.tools.search.base import SearchBackend
from retlink.tools.search.gather import gather_evidence


async def search(
    task: dict[str, Any], *, backends: list[SearchBackend], cfg: SearchConfig, scraper: Any = None
) -> dict[str, Any]:
    query = task["query"]
    budget = task.get("budget") or Budget.from_config(cfg)
    result = await gather_evidence(
        query,
        backends,
        k=cfg.results_per_query,
        max_passage_chars=cfg.max_passage_chars,
        scraper=scraper,
        budget=budget,
        passages_per_page=cfg.passages_per_page,
        max_evidence_tokens=cfg.max_evidence_tokens,
    )
    return {
        "evidence": result.evidence,
        "search_failures": result.failures,
        "_detail": {"query": query, "urls": [e.url for e in result.evidence], "failures": result.failures[:5]},
    }
