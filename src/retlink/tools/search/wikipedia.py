"""Wikipedia backend: MediaWiki full-text search, then the REST page summary of each hit.

Entity-centric and free. The summary (the article's lead, as plain text) is usually the best
single description of an entity there is, and it comes as JSON, so hits carry it as content and
nothing is scraped; a hit whose summary fails falls back to its URL (the scraper reads it).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

from retlink.core.types import SearchHit
from retlink.tools.search.api_client import JsonApi, expect, plain_text

log = logging.getLogger(__name__)


class WikipediaSearch:
    def __init__(self, api: JsonApi, *, name: str = "wikipedia") -> None:
        self.name = name
        self.api = api

    def _page_url(self, title: str) -> str:
        return f"{self.api.base_url}/wiki/{quote(title.replace(' ', '_'), safe='')}"

    async def _summary(self, title: str) -> dict | None:
        try:
            data = await self.api.get_json(
                f"/api/rest_v1/page/summary/{quote(title.replace(' ', '_'), safe='')}", {}
            )
        except Exception as e:  # one missing summary must not lose the other hits
            log.warning("wikipedia summary of %r failed: %s", title, e)
            return None
        return data if isinstance(data, dict) else None

    async def search(self, query: str, k: int) -> list[SearchHit]:
        data = await self.api.get_json(
            "/w/api.php",
            {
                "action": "query",
                "list": "search",
                "srsearch": query,
                "srlimit": k,
                "format": "json",
                "utf8": 1,
            },
        )
        items = [
            i
            for i in expect(data, "query.search", list)
            if isinstance(i, dict) and isinstance(i.get("title"), str)
        ]
        items = items[:k]
        summaries = await asyncio.gather(*(self._summary(i["title"]) for i in items))
        hits = []
        for rank, (item, summary) in enumerate(zip(items, summaries, strict=True)):
            extract = (summary or {}).get("extract")
            url = ((summary or {}).get("content_urls") or {}).get("desktop", {}).get("page")
            hits.append(
                SearchHit(
                    title=str((summary or {}).get("title") or item["title"]),
                    url=url
                    if isinstance(url, str) and url.startswith("http")
                    else self._page_url(item["title"]),
                    snippet=plain_text(str(item.get("snippet") or "")),
                    backend=self.name,
                    rank=rank,
                    content=extract if isinstance(extract, str) and extract.strip() else None,
                )
            )
        return hits
