"""retrieve: propose candidate entities from the KB and score them.

Four sources are unioned: the alias table (exact name match of the mention: the strongest
signal in entity linking), the text nearest neighbours of the mention in its sentence, the text
nearest neighbours of the caption's labels, and the image nearest neighbours of the image. Every
candidate is then scored on both sides:

    fused = (w_text * text + w_image * image) / (w_text + w_image) + alias_bonus * alias_match

`text` is the similarity of the mention in its sentence to the entity's KB text, and `image` the
best similarity of the image to the entity's KB images: exactly the baseline's fusion
(`retlink.eval.baseline`, the same `fused_similarity`), so without a decision head the agent's
ranking is the baseline's plus the alias bonus, never a different blend. The caption is its own
signal (`caption_score`, a decision-head feature); mixing its labels into the text query made the
fused ranking worse than the baseline's wherever the tagger's labels are off.

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


def mention_text(mention: str, context: str) -> str:
    """The mention in its sentence (the sentence alone when it already contains the mention, the
    mention alone without one): the text side of both the agent's and the baseline's similarity.
    The agent's validator fills a missing sentence with the mention, so both get the same text."""
    context = context.strip()
    if not mention or (context and mention.lower() in context.lower()):
        return context
    return f"{mention}. {context}" if context else mention


def fused_similarity(text: float, image: float | None, text_weight: float, image_weight: float) -> float:
    """Weighted mean of the two similarities; text alone when the entity has no image (or the
    image weight is 0), so a missing picture is not a penalty."""
    if image is None or image_weight == 0:
        return text
    return (text_weight * text + image_weight * image) / (text_weight + image_weight)


def fuse(text: float, image: float | None, alias: bool, cfg: KBConfig, image_scale: float = 1.0) -> float:
    """The agent's fused score: `fused_similarity` with the KB config's weights (the image's
    scaled by `image_scale`), plus the alias bonus."""
    base = fused_similarity(text, image, cfg.text_weight, cfg.image_weight * image_scale)
    return float(base + (cfg.alias_bonus if alias else 0.0))


def caption_text(caption: Caption | None) -> str | None:
    """What the caption says, as text to compare with entity descriptions (None: nothing)."""
    labels = [label for label, _ in (caption.labels if caption else [])[:3]]
    if labels:
        return ", ".join(labels)
    return caption.text if caption and caption.text else None


def rank_candidates(
    kb: KBStore,
    text_vector: np.ndarray | None,
    image_vector: np.ndarray | None,
    mention: str,
    cfg: KBConfig,
    image_scale: float = 1.0,
    caption_vector: np.ndarray | None = None,
) -> list[Candidate]:
    """Union the candidate sources (`pool_size` from each) and return the pool sorted by fused
    score, ties broken by id as the baseline breaks them; the decision layer keeps the top_k.

    `text_vector` is the mention in its sentence (None: no text, the image-only setting, scored
    on the image alone as the baseline does)."""
    k = cfg.pool_size
    alias_ids = kb.aliases.lookup(mention) if mention else []
    ids = dict.fromkeys(alias_ids)
    for vector, query in ((text_vector, kb.query_text), (caption_vector, kb.query_text), (image_vector, kb.query_image)):
        if vector is not None:
            ids.update(dict.fromkeys(eid for eid, _ in query(vector, k)))
    pool = list(ids)
    text_sim = kb.text_similarity(text_vector, pool) if text_vector is not None else {}
    image_sim = kb.image_similarity(image_vector, pool) if image_vector is not None else {}
    caption_sim = kb.text_similarity(caption_vector, pool) if caption_vector is not None else {}
    if text_vector is None:
        cfg = cfg.model_copy(update={"text_weight": 0.0})
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
    candidates.sort(key=lambda c: (-c.score, c.entity.id))
    return [c for c in candidates if c.score >= cfg.min_score]


def retrieve(
    state: dict[str, Any],
    *,
    kb: KBStore,
    text_embedder: TextEmbedder,
    image_embedder: ImageEmbedder | None,
    cfg: KBConfig,
) -> dict[str, Any]:
    query = mention_text(state["mention"], state["context"])
    if query and state.get("summary"):  # modality summarisation: the image in words joins the query
        query = f"{query} {state['summary']}"
    described = caption_text(state.get("caption"))
    texts = [t for t in (query, described) if t]
    vectors = dict(zip(texts, text_embedder.embed(texts), strict=True)) if texts else {}
    text_vector = vectors.get(query) if query else None
    caption_vector = vectors.get(described) if described else None
    image_vector = state.get("image_vector")
    no_image = state.get("pixels") is None
    if image_vector is None and image_embedder is not None and kb.has_images and not no_image:
        image_vector = image_embedder.embed_images([from_pixels(state["pixels"])])[0]
    scale = cfg.image_weight_when_perturbed if state.get("perturbed") else 1.0
    pool = rank_candidates(kb, text_vector, image_vector, state["mention"], cfg, scale, caption_vector)
    detail: dict[str, Any] = {"query": query, "caption": described, "pool": len(pool), "top": [c.entity.id for c in pool[:3]]}
    if no_image:
        detail["image_retrieval"] = "skipped: no image"
    return {"candidates": pool, "image_vector": image_vector, "_detail": detail}
