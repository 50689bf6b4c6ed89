"""Offline search over a local document corpus (the embedded default's "web").

The corpus is JSONL with `url`, `title` and `text` per line. Documents are ranked by cosine
similarity of MiniLM embeddings, blended with a title keyword match so that an entity's own
page ranks first for a query naming it. Hits carry the full text, so nothing is scraped.
The corpus vectors are kept on disk by the texts and the embedder (`corpus_vectors`), so a new
process reads them instead of embedding the whole corpus again at start-up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np

from retlink.core.errors import BackendError, DatasetError
from retlink.core.types import SearchHit
from retlink.tools.atomic import write_atomic
from retlink.tools.kb.embedders import TextEmbedder

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2}


def corpus_vectors(texts: list[str], embedder: TextEmbedder, vectors_dir: Path | None) -> np.ndarray:
    """The embeddings of `texts`, read from `vectors_dir` when an earlier process stored them for
    the same texts and embedder, else computed and stored there (atomically: a crash or a
    parallel writer never leaves a torn file). An unreadable or mismatched file is recomputed."""
    if vectors_dir is None or not texts:
        return embedder.embed(texts)
    digest = hashlib.sha256("\x00".join([embedder.name, str(embedder.dim), *texts]).encode()).hexdigest()[:24]
    path = Path(vectors_dir) / f"{digest}.npy"
    try:
        vectors = np.load(path, allow_pickle=False)
        if vectors.dtype == np.float32 and vectors.shape == (len(texts), embedder.dim) and np.isfinite(vectors).all():
            return vectors
        log.warning("corpus vectors %s do not fit this corpus; embedding it again", path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        log.warning("corpus vectors %s unreadable (%s); embedding the corpus again", path, e)
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
    try:
        write_atomic(path, lambda fh: np.save(fh, vectors, allow_pickle=False))
    except OSError as e:  # a read-only cache costs start-up time, never a link
        log.warning("could not store corpus vectors in %s: %s", path.parent, e)
    return vectors


class LocalCorpusSearch:
    """Search backend over a JSONL corpus, embedded once (and kept in `vectors_dir`, when given,
    for later processes)."""

    def __init__(self, path: Path, embedder: TextEmbedder, name: str = "local", vectors_dir: Path | None = None) -> None:
        self.name = name
        self.path = Path(path)
        self.docs = self._load(self.path)
        self._embedder = embedder
        self._vectors = corpus_vectors([f"{d['title']}. {d['text']}" for d in self.docs], embedder, vectors_dir)
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
