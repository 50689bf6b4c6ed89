"""Wikidata backend: `wbsearchentities`, the label/alias search behind Wikidata's search box.

It matches entity names rather than full text, which is what a mention is. Each hit's content is
its label, description and aliases: short, but precise, and enough to tell Chelsea the football
club from Chelsea the cat. The entity page itself is not scraped (it is a data table).
"""

from __future__ import annotations

from urllib.parse import urljoin

from retlink.core.errors import BackendError
from retlink.core.types import SearchHit
from retlink.tools.search.api_client import JsonApi, expect


class WikidataSearch:
    def __init__(self, api: JsonApi, *, name: str = "wikidata", language: str = "en") -> None:
        self.name = name
        self.api = api
        self.language = language

    async def search(self, query: str, k: int) -> list[SearchHit]:
        data = await self.api.get_json(
            "/w/api.php",
            {
                "action": "wbsearchentities",
                "search": query,
                "language": self.language,
                "uselang": self.language,
                "type": "item",
                "limit": k,
                "format": "json",
            },
        )
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            err = data["error"]
            raise BackendError(f"API error {err.get('code')}: {err.get('info')}")
        hits = []
        for item in expect(data, "search", list):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            label = str(item.get("label") or item["id"])
            description = str(item.get("description") or "")
            aliases = [str(a) for a in item.get("aliases") or [] if isinstance(a, str)]
            text = f"{label} ({item['id']})" + (f": {description}." if description else ".")
            if aliases:
                text += f" Also known as: {', '.join(aliases)}."
            url = item.get("url") or item.get("concepturi") or f"/wiki/{item['id']}"
            hits.append(
                SearchHit(
                    title=label,
                    url=urljoin(self.api.base_url + "/", str(url)),
                    snippet=description,
                    backend=self.name,
                    rank=len(hits),
                    content=text,
                )
            )
            if len(hits) >= k:
                break
        return hits
