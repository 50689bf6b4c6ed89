"""JSON over HTTP for search services, with the same limits and SSRF guard as page fetches.

A search service is configured by the operator, so its own host may be private (a self-hosted
SearxNG on the LAN): each service's client allowlists exactly that host and port, nothing else.
Answers are untrusted all the same: bounded in size and time, and malformed JSON is a
BackendError with a message, so the chain records it and tries the next backend.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from retlink.core.errors import BackendError
from retlink.core.schema import SearchBackendConfig, SearchConfig
from retlink.core.types import SearchHit
from retlink.tools.net_guard import HostPolicy, Resolver, system_resolve
from retlink.tools.scrape.fetch import Fetcher, FetchSettings

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
JSON_TYPES = ("application/json", "text/json")


def plain_text(snippet: str) -> str:
    """A search snippet without its highlighting markup and entities."""
    return _SPACE.sub(" ", html.unescape(_TAG.sub("", snippet or ""))).strip()


class JsonApi:
    """GET JSON from one configured service (base_url)."""

    def __init__(
        self,
        base_url: str,
        cfg: SearchConfig,
        backend: SearchBackendConfig,
        *,
        resolver: Resolver = system_resolve,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        policy = HostPolicy.from_entries(cfg.allow_hosts).with_hosts(self.base_url)
        settings = FetchSettings.from_config(cfg, content_types=JSON_TYPES, page_timeout_s=backend.timeout_s)
        self._fetcher = Fetcher(settings, policy, resolver=resolver)

    async def get_json(self, path: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        """The decoded JSON at base_url + path; raises BackendError (FetchError included)."""
        raw = await self._fetcher.get(f"{self.base_url}{path}", params=params, headers=headers)
        try:
            return json.loads(raw.body.decode(raw.charset or "utf-8", errors="replace"))
        except ValueError as e:
            raise BackendError(f"malformed JSON from {raw.final_url}: {e}") from None

    async def aclose(self) -> None:
        await self._fetcher.aclose()


def expect(data: Any, path: str, kind: type) -> Any:
    """data[path...] checked to be of `kind`: a clear BackendError for a reply of the wrong shape."""
    value = data
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise BackendError(f"unexpected reply: no {path!r}")
        value = value[key]
    if not isinstance(value, kind):
        raise BackendError(f"unexpected reply: {path!r} is {type(value).__name__}, not {kind.__name__}")
    return value


def web_hits(items: list, *, backend: str, k: int, snippet_key: str) -> list[SearchHit]:
    """Up to k hits from a web-search result list of dicts with url, title and a snippet field.

    Entries that are not dicts or whose URL is not http(s) are skipped, not fatal: one odd
    result must not cost the others.
    """
    hits: list[SearchHit] = []
    for item in items:
        if not isinstance(item, dict) or not str(item.get("url", "")).startswith(("http://", "https://")):
            continue
        hits.append(
            SearchHit(
                title=plain_text(str(item.get("title") or item["url"])),
                url=item["url"],
                snippet=plain_text(str(item.get(snippet_key) or "")),
                backend=backend,
                rank=len(hits),
            )
        )
        if len(hits) >= k:
            break
    return hits
