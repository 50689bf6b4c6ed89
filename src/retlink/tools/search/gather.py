"""Turn one planned query into evidence: search the backend chain, then read the pages.

Hits that carry their text (the local corpus, Wikipedia summaries, Wikidata descriptions) become
evidence directly; hits that only carry a URL are fetched and extracted by the scraper in
parallel. Duplicates (same normalised URL, same text) are dropped, then the best passages are
chosen within the query's token budget. Failures of a backend are recorded and the next backend
in the chain is tried; failures of pages are recorded; nothing here raises for an ordinary
failure, and a shared Budget bounds pages and seconds across all queries of a link.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from retlink.core.errors import BackendError
from retlink.core.types import Evidence, SearchHit
from retlink.tools.scrape.budget import Budget
from retlink.tools.scrape.fetch import FetchError
from retlink.tools.scrape.passages import content_hash, select_passages
from retlink.tools.scrape.urls import normalise_url
from retlink.tools.search.base import SearchBackend

log = logging.getLogger(__name__)


@dataclass
class GatherResult:
    evidence: list[Evidence] = field(default_factory=list)
    #: one line per thing that failed: "<backend>: <why>" or "<url>: [<kind>] <why>"
    failures: list[str] = field(default_factory=list)


@dataclass
class _Doc:
    hit: SearchHit
    url: str
    title: str
    text: str
    date: str | None = None


async def _search_chain(
    query: str, backends: list[SearchBackend], k: int, budget: Budget, result: GatherResult
) -> list[SearchHit]:
    """Hits of the first backend that answers with any; the others' failures are recorded."""
    for backend in backends:
        if budget.expired:
            result.failures.append(f"{backend.name}: [budget] no time left for the search")
            break
        try:
            async with asyncio.timeout(budget.remaining_s()):
                hits = await backend.search(query, k)
        except BackendError as e:
            result.failures.append(f"{backend.name}: {e}")
            continue
        except TimeoutError:
            result.failures.append(f"{backend.name}: [budget] search not finished within the time budget")
            continue
        except Exception as e:  # a backend bug must not take the link down; it is logged in full
            log.exception("search backend %s crashed", backend.name)
            result.failures.append(f"{backend.name}: unexpected {type(e).__name__}: {e}")
            continue
        if hits:
            return hits[:k]
    return []


async def gather_evidence(
    query: str,
    backends: list[SearchBackend],
    *,
    k: int = 3,
    max_passage_chars: int = 600,
    scraper=None,
    budget: Budget | None = None,
    passages_per_page: int = 2,
    max_evidence_tokens: int = 600,
) -> GatherResult:
    """Search with the first backend that answers; return evidence and a record of failures.

    scraper: a Scraper (build_scraper(cfg)) for hits without text; None records them as failures.
    budget: shared by all queries of one link (`resolve_budget` of the link's BudgetSpec); None means unbounded.
    Evidence comes one per page in search-rank order, holding that page's chosen passages.
    """
    budget = budget if budget is not None else Budget()
    result = GatherResult()
    hits = await _search_chain(query, backends, k, budget, result)

    docs: list[_Doc] = []
    to_fetch: list[SearchHit] = []
    for hit in hits:
        if not budget.first_url(normalise_url(hit.url)):
            log.debug("skipping %s: already used in this link", hit.url)
        elif hit.content is not None:
            docs.append(_Doc(hit, hit.url, hit.title, hit.content))
        elif scraper is None:
            result.failures.append(f"{hit.url}: no scraper configured for hits without content")
        else:
            to_fetch.append(hit)
    if to_fetch:
        outcomes = await scraper.fetch_many([h.url for h in to_fetch], budget=budget)
        for hit, outcome in zip(to_fetch, outcomes, strict=True):
            if isinstance(outcome, FetchError):
                result.failures.append(str(outcome))
            else:
                docs.append(
                    _Doc(hit, outcome.final_url, outcome.title or hit.title, outcome.text, outcome.date)
                )
    docs.sort(key=lambda d: d.hit.rank)
    docs = [d for d in docs if d.text.strip() and budget.first_content(content_hash(d.text))]

    chosen = select_passages(
        [d.text for d in docs],
        query,
        max_chars=max_passage_chars,
        per_doc=passages_per_page,
        max_tokens=max_evidence_tokens,
    )
    for doc, passages in zip(docs, chosen, strict=True):
        if passages:
            result.evidence.append(
                Evidence(
                    url=doc.url,
                    title=doc.title,
                    text="\n".join(passages),
                    query=query,
                    backend=doc.hit.backend,
                    date=doc.date,
                )
            )
    return result
