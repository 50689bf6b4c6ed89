"""Build the configured chain of search backends."""

from __future__ import annotations

from retlink.tools.kb.embedders import TextEmbedder
from retlink.tools.search.base import SearchBackend

from retlink.config import SearchConfig
from retlink.errors import ConfigError


def build_search_backends(cfg: SearchConfig, embedder: TextEmbedder) -> list[SearchBackend]:
    """The backends in fallback order; empty when search is disabled or none is configured."""
    if not cfg.enabled:
        return []
    backends: list[SearchBackend] = []
    for b in cfg.backends:
        if b.kind == "local":
            from retlink.tools.search.local import LocalCorpusSearch

            if b.path is None:
                raise ConfigError("search.backends: a 'local' backend needs a 'path' to a corpus JSONL")
            backends.append(LocalCorpusSearch(b.path, embedder))
        else:
            raise ConfigError(f"search backend {b.kind!r} is not available in this build")
    return backends
