"""The CLIP-style baseline linker: fused image and text similarity to the KB, no LLM.

Every MEL paper compares against it (e.g. the "CLIP" row of MIMIC's tables, Luo et al., KDD 2023:
H@1 83.23 on WikiMEL, 67.78 on RichpediaMEL, 61.21 on WikiDiverse), so the eval runner needs it
beside the agent, behind the same `link(image, mention, context) -> LinkResult` call:

    score(e) = (w_text * cos(text(mention, context), text(e)) + w_image * max_i cos(image, image_i(e)))
               / (w_text + w_image)

Candidates are the union of the text and the image nearest neighbours in the KB (its HNSW
indexes); the text and the fusion are the agent retriever's own (`mention_text`,
`fused_similarity`), so an entity without images is scored on text alone here as there, rather
than being punished for a missing picture. Unlike the agent there
is no alias table, no caption, no search and no reasoner: this is what similarity alone buys.

The image side is whatever image embedder the KB was built with: on the embedded default that is
EfficientNet-Lite0's pooled ImageNet features (real weights), never a randomly initialised CLIP
(random weights would make the baseline meaningless); with open_clip weights (`pretrained="openai"`) it is the classic CLIP
baseline. Both sides compare like with like (text-text, image-image), since MiniLM and
EfficientNet do not share a space.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from retlink.agent.nodes.retriever import fused_similarity, mention_text
from retlink.core.config import StrictModel
from retlink.core.errors import EmptyMentionError
from retlink.core.networks import DEFAULT_NETWORK
from retlink.core.schema import FUSION_IMAGE_WEIGHT, FUSION_TEXT_WEIGHT, ImageBackend
from retlink.core.types import Candidate, LinkResult, TraceEvent
from retlink.eval.pipeline_base import top_ranked
from retlink.tools.images import load_image
from retlink.tools.kb.store import KBStore


class BaselineConfig(StrictModel):
    """Weights and sizes of the baseline; the YAML eval config sets these."""

    text_weight: float = Field(FUSION_TEXT_WEIGHT, ge=0)
    image_weight: float = Field(FUSION_IMAGE_WEIGHT, ge=0)
    #: candidates returned in the LinkResult
    top_k: int = Field(10, ge=1, le=100)
    #: nearest neighbours taken from each index before fusing (recall of the union)
    pool: int = Field(50, ge=1, le=1000)
    #: the image embedder the KB was built with (`embedder.image_backend` names)
    image_backend: ImageBackend = DEFAULT_NETWORK.value


def fuse(text: float, image: float | None, cfg: BaselineConfig) -> float:
    """The fusion the agent's retriever uses (`fused_similarity`), with the baseline's weights."""
    return fused_similarity(text, image, cfg.text_weight, cfg.image_weight)


class CLIPBaseline:
    """Rank KB entities by fused image + text similarity; the top one is the answer."""

    name = "clip-baseline"

    def __init__(self, kb: KBStore, config: BaselineConfig | None = None) -> None:
        self.kb = kb
        self.config = config or BaselineConfig()

    @classmethod
    def from_kb(
        cls,
        path: str | Path,
        config: BaselineConfig | dict[str, Any] | None = None,
        *,
        image_backend: str | None = None,
        open_clip_model: str = "ViT-B-32",
        open_clip_pretrained: str | None = None,
        device: str = "cpu",
    ) -> CLIPBaseline:
        """Open a built KB with the project's shared embedders (the ones it was built with);
        `image_backend` defaults to the config's."""
        from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder

        cfg = BaselineConfig.model_validate(config) if isinstance(config, dict) else config or BaselineConfig()
        backend = image_backend or cfg.image_backend
        image = shared_image_embedder(backend, open_clip_model, open_clip_pretrained, device)
        kb = KBStore(Path(path), shared_text_embedder(device=device), image)
        return cls(kb, cfg)

    def embed(self, image: Any, mention: str, context: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(text vector, image vector) of a query; None for a side the query lacks (no mention
        and no sentence: image only, the I2T setting)."""
        query = mention_text(mention, context)
        text_vec = self.kb.text_embedder.embed([query])[0] if query.strip() else None
        image_vec = None
        if image is not None and self.kb.has_images and self.config.image_weight > 0:
            image_vec = self.kb.image_embedder.embed_images([load_image(image)])[0]
        return text_vec, image_vec

    def rank(self, text_vec: np.ndarray | None, image_vec: np.ndarray | None) -> list[Candidate]:
        """Fused ranking of the union of text and image neighbours, best first (the image alone
        when there is no text)."""
        cfg = self.config
        if text_vec is None:
            cfg = cfg.model_copy(update={"text_weight": 0.0})
            ids = {}
        else:
            ids = dict.fromkeys(eid for eid, _ in self.kb.query_text(text_vec, cfg.pool))
        if image_vec is not None:
            ids.update(dict.fromkeys(eid for eid, _ in self.kb.query_image(image_vec, cfg.pool)))
        pool = list(ids)
        text_sim = self.kb.text_similarity(text_vec, pool) if text_vec is not None else {}
        image_sim = self.kb.image_similarity(image_vec, pool) if image_vec is not None else {}
        candidates = [
            Candidate(
                entity=entity,
                score=round(fuse(text_sim.get(entity.id, 0.0), image_sim.get(entity.id), cfg), 4),
                text_score=round(text_sim.get(entity.id, 0.0), 4),
                image_score=round(image_sim[entity.id], 4) if entity.id in image_sim else None,
            )
            for entity in self.kb.get(pool)
        ]
        candidates.sort(key=lambda c: (-c.score, c.entity.id))  # ties broken by id: deterministic
        return candidates[: cfg.top_k]

    def link(self, image: Any, mention: str, context: str = "") -> LinkResult:
        """Link like the agent does, deciding by similarity alone (decided_by="fallback")."""
        if not (mention or "").strip() and image is None:
            raise EmptyMentionError("nothing to link: no image and an empty mention")
        started = time.perf_counter()
        text_vec, image_vec = self.embed(image, (mention or "").strip(), context)
        embedded = time.perf_counter()
        candidates = self.rank(text_vec, image_vec)
        done = time.perf_counter()
        trace = [
            TraceEvent(
                node="baseline.embed",
                seconds=round(embedded - started, 4),
                skipped=None
                if image_vec is not None
                else "no image side (no image, no KB images or weight 0)",
            ),
            TraceEvent(
                node="baseline.rank", seconds=round(done - embedded, 4), detail={"pool": self.config.pool}
            ),
        ]
        weights = f"text {self.config.text_weight}, image {self.config.image_weight}"
        return top_ranked(candidates, f"{self.name}: fused similarity ({weights})", trace, mention=(mention or "").strip())
