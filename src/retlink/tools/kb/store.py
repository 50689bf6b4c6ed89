"""The knowledge base: a chromadb store of entities, in a folder or on a chroma server.

What a KB holds (`location.py` says where: a folder with an embedded chromadb, or a chroma
server reached over HTTP):
- two collections, `entities_text` (one vector per entity: name, aliases and description,
  embedded by the project's text embedder) and `entities_image` (one vector per entity image,
  metadata `entity_id`), both in cosine space with tuned HNSW settings;
- an alias table: normalised name/alias -> entity id, the classic entity-linking alias table
  (exact name matches are the strongest candidate-generation signal, and HNSW cannot give them);
  `aliases.sqlite` in a folder;
- a manifest, written last by the builder; a KB without `"status": "complete"` is refused.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from retlink.core.errors import KBError
from retlink.core.types import Entity

# the chromadb pieces and the alias table, re-exported: where callers look for them
from retlink.tools.kb.chroma import HNSW as HNSW
from retlink.tools.kb.chroma import AliasTable as AliasTable
from retlink.tools.kb.chroma import chroma_client as chroma_client
from retlink.tools.kb.chroma import kb_errors
from retlink.tools.kb.chroma import normalise_name as normalise_name
from retlink.tools.kb.embedders import ImageEmbedder, TextEmbedder
from retlink.tools.kb.location import MANIFEST as MANIFEST  # re-exported: where callers look for it
from retlink.tools.kb.location import KBLocation, kb_location

log = logging.getLogger(__name__)

def _entity_metadata(entity: Entity) -> dict[str, Any]:
    return {"name": entity.name, "entity_json": entity.model_dump_json()}


def _kb_method(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with kb_errors(self.where):
            return method(self, *args, **kwargs)

    return wrapper


def _weights_hint(built: str | None, configured: str) -> str:
    """Say in words which side has fine-tuned weights (an `@hash` name: `embedder.image_weights`)."""
    def side(name: str | None) -> str:
        return f"fine-tuned weights {name.split('@', 1)[1]}" if name and "@" in name else "the packaged weights"

    if built and built.split("@")[0] == configured.split("@")[0]:
        return f" (the same network, but the KB was embedded with {side(built)} and the config loads {side(configured)})"
    return ""


def best_similarity(vectors: dict[str, np.ndarray], query: np.ndarray) -> dict[str, float]:
    """Per entity, the best cosine similarity of `query` with its (k, d) unit vectors (an
    entity's score is its best-matching image)."""
    q = np.asarray(query, dtype=np.float32)
    return {eid: float((np.asarray(v, dtype=np.float32) @ q).max()) for eid, v in vectors.items()}


class KBStore:
    """Read access to a built KB: entities by id, text/image nearest neighbours, alias lookup.

    `location` is a KB folder, a `kb_location` (a folder or a chroma server), or a server
    address `http://HOST:PORT/NAME`."""

    def __init__(
        self,
        location: Path | str | KBLocation,
        text_embedder: TextEmbedder,
        image_embedder: ImageEmbedder | None,
    ) -> None:
        self.location = kb_location(location)
        #: the KB folder (None for a KB on a server)
        self.path: Path | None = getattr(self.location, "path", None)
        #: where the KB is, for messages: a folder or http://HOST:PORT/NAME
        self.where = str(self.location)
        manifest = self.location.read_manifest()
        if manifest is None:
            raise KBError(f"no knowledge base at {self.where} (build one with `{self.location.build_hint()}`)")
        self.manifest = manifest
        if self.manifest.get("status") != "complete":
            raise KBError(f"the knowledge base at {self.where} is incomplete (its build was interrupted); rebuild it")
        if self.manifest.get("text_model") != text_embedder.name:
            raise KBError(
                f"the KB at {self.where} was built with text model {self.manifest.get('text_model')!r}, "
                f"but the config uses {text_embedder.name!r}; rebuild the KB or change the config"
            )
        self.text_embedder = text_embedder
        self.image_embedder = image_embedder
        built_image = self.manifest.get("image_model")
        self.has_images = bool(self.manifest.get("image_count")) and image_embedder is not None
        if self.has_images and built_image != image_embedder.name:
            raise KBError(
                f"the KB at {self.where} has image vectors from {built_image!r}, but the config's image "
                f"embedder is {image_embedder.name!r}{_weights_hint(built_image, image_embedder.name)}; "
                "rebuild the KB or change the config"
            )
        with kb_errors(self.where):
            self._text, self._image, self.aliases = self.location.open(text_embedder)
            # a built KB does not change under its readers: count once, not on every query (a
            # round trip on a server)
            self._text_count, self._image_count = self._text.count(), self._image.count()
        self._cache: dict[str, Entity] = {}

    def __len__(self) -> int:
        return self._text_count

    @_kb_method
    def get(self, ids: list[str]) -> list[Entity]:
        """Entities by id, in the order asked; unknown ids are left out."""
        missing = [i for i in dict.fromkeys(ids) if i not in self._cache]
        if missing:
            got = self._text.get(ids=missing, include=["metadatas"])
            for eid, meta in zip(got["ids"], got["metadatas"], strict=True):
                self._cache[eid] = Entity.model_validate_json(meta["entity_json"])
        return [self._cache[i] for i in ids if i in self._cache]

    @_kb_method
    def query_text(self, text: str | np.ndarray, k: int) -> list[tuple[str, float]]:
        """(entity id, cosine similarity) of the k nearest entity texts."""
        vec = self.text_embedder.embed([text])[0] if isinstance(text, str) else np.asarray(text)
        res = self._text.query(query_embeddings=[vec], n_results=min(k, max(1, len(self))), include=["distances"])
        return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0], strict=True)]

    @_kb_method
    def query_image(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """(entity id, best cosine similarity over its images) of entities with the nearest images."""
        if not self.has_images:
            return []
        n = self._image_count
        res = self._image.query(
            query_embeddings=[vector], n_results=min(4 * k, max(1, n)), include=["distances", "metadatas"]
        )
        best: dict[str, float] = {}
        for meta, d in zip(res["metadatas"][0], res["distances"][0], strict=True):
            eid = meta["entity_id"]
            best[eid] = max(best.get(eid, -1.0), 1.0 - float(d))
        return sorted(best.items(), key=lambda kv: -kv[1])[:k]

    def image_file(self, path: str) -> Path:
        """Where an entity's image lies: the KB keeps image paths as the entities file wrote them,
        so relative ones are resolved against that file's folder (the manifest's `source`)."""
        p = Path(path)
        source = self.manifest.get("source")
        if not p.is_absolute() and source and source != "<iterable>":
            return Path(source).parent / p
        return p

    @_kb_method
    def image_vectors(self, entity_ids: list[str]) -> dict[str, np.ndarray]:
        """Each given entity's stored image vectors, (k, d) float32 (entities without one left out)."""
        if not self.has_images or not entity_ids:
            return {}
        got = self._image.get(where={"entity_id": {"$in": list(entity_ids)}}, include=["embeddings", "metadatas"])
        rows: dict[str, list[np.ndarray]] = {}
        for meta, emb in zip(got["metadatas"], got["embeddings"], strict=True):
            rows.setdefault(meta["entity_id"], []).append(np.asarray(emb, dtype=np.float32))
        return {eid: np.stack(v) for eid, v in rows.items()}

    def image_similarity(self, vector: np.ndarray, entity_ids: list[str]) -> dict[str, float]:
        """Best cosine similarity between `vector` and each given entity's stored images."""
        return best_similarity(self.image_vectors(entity_ids), vector)

    @_kb_method
    def text_similarity(self, vector: np.ndarray, entity_ids: list[str]) -> dict[str, float]:
        """Cosine similarity between a text vector and the given entities' text vectors."""
        if not entity_ids:
            return {}
        got = self._text.get(ids=list(entity_ids), include=["embeddings"])
        sims = np.asarray(got["embeddings"], dtype=np.float32) @ np.asarray(vector, dtype=np.float32)
        return {eid: float(s) for eid, s in zip(got["ids"], sims, strict=True)}
