"""SearxNG backend: a self-hosted metasearch engine's JSON API (`/search?format=json`).

The default for real deployments: no key, no quota, and it aggregates several engines. The
instance must have `json` in `search.formats` of its settings.yml, or it answers 403.
"""

from __future__ import annotations

from retlink.core.errors import BackendError
from retlink.core.types import SearchHit
from retlink.tools.search.api_client import JsonApi, expect, web_hits


class SearxngSearch:
    """Hits carry no content: the scraper reads the pages."""

    def __init__(self, api: JsonApi, *, name: str = "searxng", language: str = "en") -> None:
        self.name = name
        self.api = api
        self.language = language

    async def search(self, query: str, k: int) -> list[SearchHit]:
        data = await self.api.get_json(
            "/search", {"q": query, "format": "json", "language": self.language, "pageno": 1, "safesearch": 1}
        )
        results = expect(data, "results", list)
        hits = web_hits(results, backend=self.name, k=k, snippet_key="content")
        if not hits and data.get("unresponsive_engines"):
            engines = ", ".join(
                str(e[0] if isinstance(e, list) and e else e) for e in data["unresponsive_engines"]
            )
            raise BackendError(f"no results; unresponsive engines: {engines}")
        return hits
