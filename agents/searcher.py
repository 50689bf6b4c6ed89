"""search: one planned query -> evidence. The graph runs one branch per query in parallel."""

from __future__ import annotations

import asyncio
from typing import Any

from retlink.tools.search.base import SearchBackend
from retlink.tools.search.gather import gather_evidence

from retlink.config import SearchConfig


async def search(
    task: dict[str, Any], *, backends: list[SearchBackend], cfg: SearchConfig, scraper: Any = None
) -> dict[str, Any]:
    query = task["query"]
    try:
        result = await asyncio.wait_for(
            gather_evidence(
                query, backends, k=cfg.results_per_query, max_passage_chars=cfg.max_passage_chars, scraper=scraper
            ),
            timeout=cfg.time_budget_s,
        )
    except TimeoutError:
        return {"search_failures": [f"{query!r}: over the {cfg.time_budget_s:g}s search budget"], "_skipped": "time budget"}
    return {
        "evidence": result.evidence,
        "search_failures": result.failures,
        "_detail": {"query": query, "urls": [e.url for e in result.evidence], "failures": len(result.failures)},
    }
