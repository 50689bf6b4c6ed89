"""The decision layer's inputs: per-candidate signals the graph has already computed.

Each pooled candidate becomes one row of `FEATURES`; NIL gets its own short row (`NIL_FEATURES`)
describing how well the best candidates match at all. Absolute similarities are kept beside
their gaps to the pool's best, because a linear head over a softmax only sees differences
between candidates: a feature that is the same for every candidate of a link cancels out. That
is also why the link-level signals (the detector's score, whether the image was purified) enter
as interactions with the image signals: "how much to trust the image" is what they change.

The `mention*` features are the similarity of the mention in its sentence alone (the caption's
labels are the `caption*` features); they were named `text*` while the caption's labels were
mixed into that query, so a head fitted then is refused at load rather than misread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from retlink.core.types import Candidate, PoolFeatures

FEATURES: tuple[str, ...] = (
    "mention",
    "mention_gap",
    "mention_rank",
    "image",
    "image_gap",
    "image_rank",
    "has_image",
    "alias",
    "caption",
    "caption_gap",
    "fused_gap",
    "image_gap_x_detector",
    "image_gap_x_purified",
)
NIL_FEATURES: tuple[str, ...] = ("best_mention", "best_image", "any_alias", "best_fused")


def reciprocal_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return 1.0 / (1.0 + ranks)


def pool_features(
    pool: Sequence[Candidate], *, detector_score: float = 0.0, purified: bool = False
) -> PoolFeatures:
    """Feature rows of `pool` (any order) and the NIL row."""
    n = len(pool)
    if n == 0:
        return PoolFeatures(names=list(FEATURES), ids=[], rows=[], nil=[0.0] * len(NIL_FEATURES))
    text = np.array([c.text_score for c in pool])
    has_image = np.array([c.image_score is not None for c in pool], dtype=float)
    image = np.array([c.image_score if c.image_score is not None else 0.0 for c in pool])
    caption = np.array([c.caption_score if c.caption_score is not None else 0.0 for c in pool])
    alias = np.array([c.alias_match for c in pool], dtype=float)
    fused = np.array([c.score for c in pool])
    best_image = image[has_image > 0].max() if has_image.any() else 0.0
    image_gap = np.where(has_image > 0, image - best_image, 0.0)
    cols = {
        "mention": text,
        "mention_gap": text - text.max(),
        "mention_rank": reciprocal_ranks(text),
        "image": image,
        "image_gap": image_gap,
        "image_rank": np.where(has_image > 0, reciprocal_ranks(np.where(has_image > 0, image, -1.0)), 0.0),
        "has_image": has_image,
        "alias": alias,
        "caption": caption,
        "caption_gap": caption - caption.max(),
        "fused_gap": fused - fused.max(),
        "image_gap_x_detector": image_gap * float(detector_score),
        "image_gap_x_purified": image_gap * float(purified),
    }
    matrix = np.stack([cols[name] for name in FEATURES], axis=1)
    nil = [float(text.max()), float(best_image), float(alias.max()), float(fused.max())]
    return PoolFeatures(
        names=list(FEATURES),
        ids=[c.entity.id for c in pool],
        rows=np.round(matrix, 5).tolist(),
        nil=[round(v, 5) for v in nil],
    )


#: English function words: never evidence for one entity over another
_FUNCTION_WORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "had", "has", "have", "in",
     "into", "is", "it", "its", "of", "on", "or", "that", "the", "their", "this", "to", "was", "were",
     "which", "while", "with"]
)


def content_words(text: str) -> set[str]:
    """Lower-cased alphanumeric words of `text`, function words left out."""
    return {w for w in re.split(r"[^0-9a-z]+", text.lower()) if w and w not in _FUNCTION_WORDS}


def context_overlap(context: str, mention: str, texts: Sequence[str]) -> np.ndarray:
    """Per candidate, how many words of the sentence (outside the mention) its KB text shares.

    The classic context-similarity signal of entity linking (the sentence's other words against
    the entity's description): a colour, a place, a domain the sentence names that one
    candidate's description names too. A word every candidate shares adds the same to each and
    cancels in the head's softmax. It reads text only, so an image attacker cannot move it: an
    exact feature of the certified pipeline's head. (A count did better than weighting each word
    by its rarity in the pool on the logos dev links: the head weighs the count itself.)"""
    words = content_words(context) - content_words(mention)
    if not words:
        return np.zeros(len(texts))
    return np.array([float(len(words & content_words(t))) for t in texts])
