"""Turn one planned query into evidence: search the backend chain, then read the pages.

Hits that carry their text (the local corpus) become evidence directly; hits that only carry
a URL are fetched and extracted by the scraper. Failures of a backend are recorded and the next
backend in the chain is tried; nothing here raises for an ordinary failure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from retlink.tools.search.base import SearchBackend

from retlink.errors import BackendError
from retlink.types import Evidence, SearchHit

log = logging.getLogger(__name__)


@dataclass
class GatherResult:
    evidence: list[Evidence] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _passage(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut[: cut.rfind(". ") + 1] or cut


async def gather_evidence(
    query: str,
    backends: list[SearchBackend],
    *,
    k: int = 3,
    max_passage_chars: int = 600,
    scraper=None,
) -> GatherResult:
    """Search with the first backend that answers; return evidence and a record of failures."""
    result = GatherResult()
    hits: list[SearchHit] = []
    for backend in backends:
        try:
            hits = await backend.search(query, k)
        except BackendError as e:
            result.failures.append(f"{backend.name}: {e}")
            continue
        if hits:
            break
    for hit in hits:
        if hit.content is not None:
            result.evidence.append(
                Evidence(url=hit.url, title=hit.title, text=_passage(hit.content, max_passage_chars), query=query, backend=hit.backend)
            )
        elif scraper is None:
            result.failures.append(f"{hit.url}: no scraper configured for hits without content")
    return result
