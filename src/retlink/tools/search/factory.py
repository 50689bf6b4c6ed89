"""Build the configured chain of search backends (tried in the order listed in the config)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from retlink.core.errors import ConfigError
from retlink.core.paths import cache_dir
from retlink.core.schema import SearchBackendConfig, SearchConfig
from retlink.tools.net_guard import Resolver, system_resolve
from retlink.tools.search.api_client import JsonApi
from retlink.tools.search.base import SearchBackend

if TYPE_CHECKING:
    from retlink.tools.kb.embedders import TextEmbedder

_DEFAULT_URLS = {
    "wikipedia": "https://{lang}.wikipedia.org",
    "wikidata": "https://www.wikidata.org",
    "brave": "https://api.search.brave.com",
}


def _base_url(b: SearchBackendConfig) -> str:
    if b.url:
        if not b.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"search backend {b.kind!r}: url must start with http:// or https://, got {b.url!r}"
            )
        return b.url
    if b.kind not in _DEFAULT_URLS:
        raise ConfigError(f"search backend {b.kind!r} needs a 'url' (the instance's base URL)")
    return _DEFAULT_URLS[b.kind].format(lang=b.language)


def _brave_key(b: SearchBackendConfig) -> str:
    from retlink.tools.search.brave import DEFAULT_KEY_ENV

    env = b.api_key_env or DEFAULT_KEY_ENV
    key = b.api_key or os.environ.get(env)
    if not key:
        raise ConfigError(
            f"search backend 'brave' needs an API key: set 'api_key' or the environment variable {env}"
        )
    return key


def build_search_backend(
    b: SearchBackendConfig,
    cfg: SearchConfig,
    embedder: TextEmbedder | None = None,
    *,
    resolver: Resolver = system_resolve,
) -> SearchBackend:
    """One backend from its config; raises ConfigError for what is missing."""
    name = b.name or b.kind
    if b.kind == "local":
        from retlink.tools.search.local import LocalCorpusSearch

        if b.path is None:
            raise ConfigError("search.backends: a 'local' backend needs a 'path' to a corpus JSONL")
        if embedder is None:
            raise ConfigError("search.backends: a 'local' backend needs a text embedder")
        return LocalCorpusSearch(b.path, embedder, name=name, vectors_dir=cache_dir() / "corpus-vectors")
    api = JsonApi(_base_url(b), cfg, b, resolver=resolver)
    if b.kind == "searxng":
        from retlink.tools.search.searxng import SearxngSearch

        return SearxngSearch(api, name=name, language=b.language)
    if b.kind == "wikipedia":
        from retlink.tools.search.wikipedia import WikipediaSearch

        return WikipediaSearch(api, name=name)
    if b.kind == "wikidata":
        from retlink.tools.search.wikidata import WikidataSearch

        return WikidataSearch(api, name=name, language=b.language)
    if b.kind == "brave":
        from retlink.tools.search.brave import BraveSearch

        return BraveSearch(api, _brave_key(b), name=name)
    raise ConfigError(f"search backend {b.kind!r} is not available in this build")


def build_search_backends(
    cfg: SearchConfig, embedder: TextEmbedder | None = None, *, resolver: Resolver = system_resolve
) -> list[SearchBackend]:
    """The backends in fallback order; empty when search is disabled or none is configured."""
    if not cfg.enabled:
        return []
    return [build_search_backend(b, cfg, embedder, resolver=resolver) for b in cfg.backends]
