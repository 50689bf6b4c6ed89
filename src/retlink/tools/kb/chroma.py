"""The chromadb side of a KB and its alias table: the collections with retlink's settings and
embedding function, the client of a KB folder, the sqlite alias table and its rows, and the one
translation of chromadb/transport failures into `KBError`.

Below both `store.py` (the KB as the agent queries it) and `location.py` (where a KB lives, how a
build swaps it into place), which each use these pieces, so neither imports the other back.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retlink.core.errors import KBError
from retlink.core.types import Entity

if TYPE_CHECKING:  # the embedders import torch: a KB's location is checked without it
    from retlink.tools.kb.embedders import TextEmbedder

TEXT_COLLECTION = "entities_text"
IMAGE_COLLECTION = "entities_image"
#: HNSW settings: chromadb's defaults give poor recall on 384-d text vectors (measured when the
#: store was written); bench/kb.py measures recall and latency for these values.
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 128, "max_neighbors": 32}


def normalise_name(text: str) -> str:
    """Case-, accent- and punctuation-insensitive key for alias lookup."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[^\w]+", " ", text).strip()


class ChromaTextEmbedding:
    """chromadb embedding function backed by retlink's text embedder (never chroma's default,
    which would try to download an ONNX model)."""

    def __init__(self, embedder: TextEmbedder) -> None:
        self._embedder = embedder

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        return list(self._embedder.embed(list(input)))

    def embed_query(self, input: list[str]) -> list[np.ndarray]:
        return self(input)

    @staticmethod
    def name() -> str:
        return "retlink"

    def get_config(self) -> dict[str, Any]:
        return {"model": self._embedder.name}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ChromaTextEmbedding:
        from retlink.tools.kb.embedders import shared_text_embedder

        return ChromaTextEmbedding(shared_text_embedder(config["model"]))

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine"]


def chroma_client(path: Path):
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))


def open_collections(
    client,
    text_embedder: TextEmbedder,
    hnsw: dict[str, Any] | None = None,
    names: tuple[str, str] = (TEXT_COLLECTION, IMAGE_COLLECTION),
):
    """Get or create the text and image collections with retlink's settings (`names`: a
    server holds several KBs, each under its own collection names)."""
    cfg = {"hnsw": dict(hnsw or HNSW)}
    text = client.get_or_create_collection(
        names[0], configuration=cfg, embedding_function=ChromaTextEmbedding(text_embedder)
    )
    image = client.get_or_create_collection(names[1], configuration=cfg, embedding_function=None)
    return text, image


class AliasTable:
    """sqlite table of normalised alias -> entity id. Thread-safe for reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        with self._connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS alias (norm TEXT NOT NULL, entity_id TEXT NOT NULL, PRIMARY KEY (norm, entity_id))")

    def _connect(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, check_same_thread=False)
            self._local.con = con
        return con

    def add(self, entities: Iterable[Entity]) -> None:
        rows = alias_rows(entities)
        with self._connect() as con:
            con.executemany("INSERT OR IGNORE INTO alias VALUES (?, ?)", sorted(rows))

    def remove(self, entity_ids: Iterable[str]) -> None:
        ids = list(entity_ids)
        with self._connect() as con:
            for i in range(0, len(ids), 500):  # one table scan per chunk, under sqlite's 999 parameters
                chunk = ids[i : i + 500]
                con.execute(f"DELETE FROM alias WHERE entity_id IN ({','.join('?' * len(chunk))})", chunk)

    def lookup(self, mention: str, limit: int = 50) -> list[str]:
        """The ids of the entities named `mention`, the first `limit` by id: ordered, so which
        ones a common name keeps is the same on every machine and sqlite version (the primary
        key's index serves the order)."""
        key = normalise_name(mention)
        if not key:
            return []
        cur = self._connect().execute("SELECT entity_id FROM alias WHERE norm = ? ORDER BY entity_id LIMIT ?", (key, limit))
        return [r[0] for r in cur.fetchall()]

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def alias_rows(entities: Iterable[Entity]) -> set[tuple[str, str]]:
    """(normalised name, entity id) for each entity's name and aliases."""
    return {(normalise_name(n), e.id) for e in entities for n in [e.name, *e.aliases] if normalise_name(n)}


@contextlib.contextmanager
def kb_errors(where: str):
    """A server that fails (down, restarted, a collection dropped) is a KBError that names it,
    not a transport traceback."""
    import httpx
    from chromadb.errors import ChromaError

    try:
        yield
    except (httpx.HTTPError, ChromaError) as e:
        raise KBError(f"the knowledge base at {where} failed: {e}") from None
