"""search: one planned query -> evidence. The graph runs one branch per query in parallel.

All branches of one link share a `Budget` (pages and seconds): the dispatch gives each branch the
same `BudgetSpec` (plain data, so the state stays serialisable), resolved here to the one live
budget of that link; `gather_evidence` stops by itself before the deadline and keeps what it found.
"""

from __future__ import annotations

from typing import Any

from retlink.core.schema import SearchConfig
from retlink.tools.scrape import new_budget_spec, resolve_budget
from retlink.tools.search.base import SearchBackend
from retlink.tools.search.gather import gather_evidence


async def search(
    task: dict[str, Any], *, backends: list[SearchBackend], cfg: SearchConfig, scraper: Any = None
) -> dict[str, Any]:
    query = task["query"]
    budget = resolve_budget(task.get("budget") or new_budget_spec(cfg))
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
