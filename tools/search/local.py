"""Offline search over a local document corpus (the embedded default's "web").

The corpus is JSONL with `url`, `title` and `text` per line. Documents are ranked by cosine
similarity of MiniLM embeddings, blended with a title keyword match so that an entity's own
page ranks first for a query naming it. Hits carry the full text, so nothing is scraped.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import numpy as np

from retlink.errors import BackendError, DatasetError
from retlink.tools.kb.embedders import TextEmbedder
from retlink.types import SearchHit

_WORD = re.compile(r"\w+")


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2}


class LocalCorpusSearch:
    """Search backend over a JSONL corpus, embedded once at start-up."""

    def __init__(self, path: Path, embedder: TextEmbedder, name: str = "local") -> None:
        self.name = name
        self.path = Path(path)
        self.docs = self._load(self.path)
        self._embedder = embedder
        self._vectors = embedder.embed([f"{d['title']}. {d['text']}" for d in self.docs])
        self._title_words = [_words(d["title"]) for d in self.docs]

    @staticmethod
    def _load(path: Path) -> list[dict[str, str]]:
        if not path.exists():
            raise BackendError(f"local search corpus not found: {path}")
        docs = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not all(isinstance(doc.get(k), str) and doc.get(k) for k in ("url", "title", "text")):
                    raise DatasetError(f"{path}:{lineno}: a corpus document needs string url, title and text")
                docs.append(doc)
        return docs

    def search_sync(self, query: str, k: int) -> list[SearchHit]:
        if not self.docs or not query.strip():
            return []
        sims = self._vectors @ self._embedder.embed([query])[0]
        q = _words(query)
        overlap = np.array([len(q & t) / max(1, len(t)) for t in self._title_words], dtype=np.float32)
        scores = sims + 0.3 * overlap
        order = np.argsort(-scores)[:k]
        return [
            SearchHit(
                title=self.docs[i]["title"],
                url=self.docs[i]["url"],
                snippet=self.docs[i]["text"][:200],
                backend=self.name,
                rank=rank,
                content=self.docs[i]["text"],
            )
            for rank, i in enumerate(order)
        ]

    async def search(self, query: str, k: int) -> list[SearchHit]:
        return await asyncio.to_thread(self.search_sync, query, k)
