"""Brave Search backend: a commercial web search API (`/res/v1/web/search`, key in a header).

For deployments without a SearxNG instance. The key comes from the config or, better, from the
environment variable the config names, so that config files can be shared without secrets.
"""

from __future__ import annotations

from retlink.core.types import SearchHit
from retlink.tools.search.api_client import JsonApi, expect, web_hits

DEFAULT_URL = "https://api.search.brave.com"
DEFAULT_KEY_ENV = "BRAVE_API_KEY"


class BraveSearch:
    """Hits carry no content: the scraper reads the pages."""

    def __init__(self, api: JsonApi, api_key: str, *, name: str = "brave") -> None:
        self.name = name
        self.api = api
        self._api_key = api_key

    def __repr__(self) -> str:  # never print the key
        return f"BraveSearch(name={self.name!r}, url={self.api.base_url!r})"

    async def search(self, query: str, k: int) -> list[SearchHit]:
        data = await self.api.get_json(
            "/res/v1/web/search",
            {"q": query, "count": min(k, 20)},
            headers={"X-Subscription-Token": self._api_key, "Accept": "application/json"},
        )
        if isinstance(data, dict) and "web" not in data and data.get("type") == "search":
            return []  # Brave leaves out the "web" section when nothing matched
        return web_hits(expect(data, "web.results", list), backend=self.name, k=k, snippet_key="description")
