"""retrieve: propose candidate entities from the KB and score them.

Three sources are unioned: the alias table (exact name match of the mention: the strongest
signal in entity linking), text nearest neighbours of mention + context + caption labels, and
image nearest neighbours of the image. Every candidate is then scored on both sides:

    fused = (w_text * text + w_image * image) / (w_text + w_image) + alias_bonus * alias_match

`pool_size` candidates come from each source, and the whole pool goes on to the decision layer
(`agent/nodes/decide.py`), which ranks it with every cheap signal and keeps the `top_k`.

An entity without images is scored on text alone (renormalised weights) instead of being
penalised, because many KB entities have no picture. When the image looks perturbed the image
weight is scaled down by `image_weight_when_perturbed`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retlink.core.schema import KBConfig
from retlink.core.types import Candidate, Caption
from retlink.tools.images import from_pixels
from retlink.tools.kb.embedders import ImageEmbedder, TextEmbedder
from retlink.tools.kb.store import KBStore


def retrieval_query(mention: str, context: str, caption: Caption | None) -> str:
    """The text used to find candidates: the sentence, the mention, and the caption's labels."""
    labels = ", ".join(label for label, _ in (caption.labels if caption else [])[:3])
    text = context if mention.lower() in context.lower() else f"{mention}. {context}"
    return (f"{text} Image: {labels}." if text else f"Image: {labels}.") if labels else text


def fuse(text: float, image: float | None, alias: bool, cfg: KBConfig, image_scale: float = 1.0) -> float:
    w_img = cfg.image_weight * image_scale
    if image is None or w_img == 0:
        base = text
    else:
        base = (cfg.text_weight * text + w_img * image) / (cfg.text_weight + w_img)
    return float(base + (cfg.alias_bonus if alias else 0.0))


def caption_text(caption: Caption | None) -> str | None:
    """What the caption says, as text to compare with entity descriptions (None: nothing)."""
    labels = [label for label, _ in (caption.labels if caption else [])[:3]]
    if labels:
        return ", ".join(labels)
    return caption.text if caption and caption.text else None


def rank_candidates(
    kb: KBStore,
    text_vector: np.ndarray,
    image_vector: np.ndarray | None,
    mention: str,
    cfg: KBConfig,
    image_scale: float = 1.0,
    caption_vector: np.ndarray | None = None,
) -> list[Candidate]:
    """Union the three candidate sources (`pool_size` from each) and return the pool sorted by
    fused score; the decision layer keeps the top_k of it."""
    k = cfg.pool_size
    alias_ids = kb.aliases.lookup(mention)
    ids = dict.fromkeys(alias_ids)
    ids.update(dict.fromkeys(eid for eid, _ in kb.query_text(text_vector, k)))
    if image_vector is not None:
        ids.update(dict.fromkeys(eid for eid, _ in kb.query_image(image_vector, k)))
    pool = list(ids)
    text_sim = kb.text_similarity(text_vector, pool)
    image_sim = kb.image_similarity(image_vector, pool) if image_vector is not None else {}
    caption_sim = kb.text_similarity(caption_vector, pool) if caption_vector is not None else {}
    alias_set = set(alias_ids)
    candidates = [
        Candidate(
            entity=entity,
            text_score=round(text_sim.get(entity.id, 0.0), 4),
            image_score=round(image_sim[entity.id], 4) if entity.id in image_sim else None,
            alias_match=entity.id in alias_set,
            caption_score=round(caption_sim[entity.id], 4) if entity.id in caption_sim else None,
            score=round(
                fuse(text_sim.get(entity.id, 0.0), image_sim.get(entity.id), entity.id in alias_set, cfg, image_scale), 4
            ),
        )
        for entity in kb.get(pool)
    ]
    candidates.sort(key=lambda c: -c.score)
    return [c for c in candidates if c.score >= cfg.min_score]


def retrieve(
    state: dict[str, Any],
    *,
    kb: KBStore,
    text_embedder: TextEmbedder,
    image_embedder: ImageEmbedder | None,
    cfg: KBConfig,
) -> dict[str, Any]:
    query = retrieval_query(state["mention"], state["context"], state.get("caption"))
    described = caption_text(state.get("caption"))
    vectors = text_embedder.embed([query] if described is None else [query, described])
    text_vector = vectors[0]
    caption_vector = vectors[1] if described is not None else None
    image_vector = state.get("image_vector")
    no_image = state.get("pixels") is None
    if image_vector is None and image_embedder is not None and kb.has_images and not no_image:
        image_vector = image_embedder.embed_images([from_pixels(state["pixels"])])[0]
    scale = cfg.image_weight_when_perturbed if state.get("perturbed") else 1.0
    pool = rank_candidates(kb, text_vector, image_vector, state["mention"], cfg, scale, caption_vector)
    detail: dict[str, Any] = {"query": query, "pool": len(pool), "top": [c.entity.id for c in pool[:3]]}
    if no_image:
        detail["image_retrieval"] = "skipped: no image"
    return {"candidates": pool, "image_vector": image_vector, "_detail": detail}
