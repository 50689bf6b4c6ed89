"""`attack: text`: one to k word substitutions in the mention's sentence, BERT-Attack style
(Li et al., 2020), greedy on the score the pipelines rank with.

The score: the pipelines' own fused similarity of the query to each KB entity, the text
embedder's cosine of the mention in its sentence (`mention_text`, what the baseline and the
agent's retriever embed) with the entity's text, fused with the image's similarity to the
entity's images by the baseline's weights (`fused_similarity`). The attack raises the margin
max over wrong entities minus the gold entity's score, over the gold entity and the `distractors`
wrong entities that score highest on the clean input. Each step tries every candidate word at
every position not yet edited (and not part of the mention) and keeps the edit that raises the
margin most; it stops after `max_substitutions` edits or when no edit raises it.

Candidates come from a language model's predictions for the slot (`candidates: lm`, the
in-process model `lm`) or, the cheap fallback, the text encoder's input-embedding neighbours
(`candidates: embedding_neighbours`), and, as BERT-Attack filters them, a candidate sentence is
kept only while the text embedder finds it at least `min_similarity` similar to the original.

The image is left as it is: in the attack registry so that a config names it like every attack
(`attack: text`, presets, checked parameters), stored and reused like the image attacks (the
edited sentence is stored with the unchanged image, as the multimodal attack stores its own).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from retlink.attacks.base import Attack
from retlink.attacks.targets import Target
from retlink.attacks.word_candidates import CANDIDATE_SOURCES, Proposer


class TextAttack(Attack):
    """Word substitutions in the sentence; the image untouched (see the module docstring).

    Presets: normal: 1 substitution from 8 LM candidates per word; strong: up to 3 from 16.
    """

    name = "text"
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {"max_substitutions": 1, "neighbours": 8},
        "strong": {"max_substitutions": 3, "neighbours": 16},
    }

    def __init__(
        self,
        target: Target,
        *,
        max_substitutions: int = 1,
        candidates: str = "lm",
        neighbours: int = 8,
        lm: str = "smollm2-embedded",
        min_similarity: float = 0.7,
        distractors: int = 8,
        text_weight: float = 0.5,
        image_weight: float = 0.5,
        **common: Any,
    ) -> None:
        super().__init__(target, **common)
        if max_substitutions < 1 or neighbours < 1 or distractors < 1:
            raise ValueError("max_substitutions, neighbours and distractors must be at least 1")
        if candidates not in CANDIDATE_SOURCES:
            raise ValueError(f"candidates {candidates!r}: choose {' or '.join(CANDIDATE_SOURCES)}")
        if not -1 <= min_similarity <= 1:
            raise ValueError(f"min_similarity {min_similarity} is no cosine (between -1 and 1)")
        if text_weight <= 0 or image_weight < 0:
            raise ValueError("text_weight must be above 0 and image_weight at least 0")
        self.max_substitutions, self.candidates, self.neighbours, self.lm = max_substitutions, candidates, neighbours, lm
        self.min_similarity, self.distractors = min_similarity, distractors
        self.text_weight, self.image_weight = text_weight, image_weight

    def perturb(self, x: torch.Tensor, y: Any, generator: torch.Generator) -> torch.Tensor:
        """The image half of a text attack: none."""
        return x.clone()


def query_text(mention: str, words: list[str]) -> str:
    """What the pipelines embed for a sample: the mention in its sentence."""
    from retlink.agent.nodes.retriever import mention_text

    return mention_text(mention, " ".join(words))


def fused(text_sims: np.ndarray, image_sims: np.ndarray | None, text_weight: float, image_weight: float) -> np.ndarray:
    """`fused_similarity` over arrays: (N, K) text cosines with (K,) or (N, K) image cosines, NaN
    where an entity has no image (the text alone there, as the pipelines score it)."""
    if image_sims is None or image_weight == 0:
        return text_sims
    img = np.broadcast_to(image_sims, text_sims.shape)
    mixed = (text_weight * text_sims + image_weight * np.nan_to_num(img)) / (text_weight + image_weight)
    return np.where(np.isnan(img), text_sims, mixed)


def margin(scores: np.ndarray) -> np.ndarray:
    """(N, K) scores with the gold entity in column 0 -> best wrong entity minus gold (> 0: the
    pipeline's ranking would put a wrong entity first)."""
    return scores[:, 1:].max(axis=1) - scores[:, 0]


@dataclass
class SentenceState:
    """One sample's sentence under attack, against its candidate entities (gold first)."""

    mention: str
    words: list[str]
    #: (K, D) unit text embeddings of the gold entity and the distractors
    refs: np.ndarray
    #: (K,) the image's cosine to each entity's images (NaN: none), or None without an image
    image_sims: np.ndarray | None
    #: the KB ids of the K entities (gold first)
    entity_ids: list[str] = field(default_factory=list)
    original: list[str] = field(default_factory=list)
    edits: list[dict[str, Any]] = field(default_factory=list)
    #: the original query's embedding (the similarity filter's anchor)
    anchor: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.words = list(self.words)  # edited in place: never the caller's list
        self.original = list(self.words)

    def editable(self) -> list[int]:
        """Positions that may change: 2+ letters, not edited yet, no word of the mention."""
        mention = {w.strip(string.punctuation).lower() for w in self.mention.split()}
        done = {e["position"] for e in self.edits}
        return [
            i for i, w in enumerate(self.words)
            if i not in done and len(w.strip(string.punctuation)) >= 2 and w.strip(string.punctuation).lower() not in mention
        ]


def greedy_step(
    state: SentenceState, encoder: Any, propose: Proposer, *, text_weight: float, image_weight: float, min_similarity: float
) -> tuple[float, float]:
    """Apply the one substitution that raises the margin most (if any raises it); returns the
    margin (before, after). All variants go to the encoder in one batch."""
    positions = state.editable()
    proposals = propose(state.words, positions)
    variants = [(i, c) for i in positions for c in proposals.get(i, []) if c != state.words[i]]
    texts = [query_text(state.mention, state.words)]
    texts += [query_text(state.mention, [*state.words[:i], c, *state.words[i + 1 :]]) for i, c in variants]
    vecs = np.asarray(encoder.embed(texts), dtype=np.float32)
    if state.anchor is None:
        state.anchor = np.asarray(encoder.embed([query_text(state.mention, state.original)])[0], dtype=np.float32)
    m = margin(fused(vecs @ state.refs.T, state.image_sims, text_weight, image_weight))
    kept = (vecs[1:] @ state.anchor) >= min_similarity
    gains = np.where(kept, m[1:], -np.inf)
    if not variants or not np.isfinite(gains).any() or gains.max() <= m[0]:
        return float(m[0]), float(m[0])
    best = int(np.argmax(gains))
    i, c = variants[best]
    state.edits.append({"position": i, "original": state.words[i], "replacement": c})
    state.words[i] = c
    return float(m[0]), float(m[1 + best])


def attack_sentence(
    state: SentenceState, encoder: Any, propose: Proposer, attack: TextAttack
) -> dict[str, Any]:
    """Up to `attack.max_substitutions` greedy steps; what the run stores with the sample."""
    first = last = None
    for _ in range(attack.max_substitutions):
        before, after = greedy_step(
            state, encoder, propose,
            text_weight=attack.text_weight, image_weight=attack.image_weight, min_similarity=attack.min_similarity,
        )
        first = before if first is None else first
        last = after
        if after <= before:
            break
    return describe(state, encoder, first, last)


def describe(state: SentenceState, encoder: Any, margin_clean: float | None, margin_attacked: float | None) -> dict[str, Any]:
    """The stored record of a sentence attack: the edited sentence, the edits, the margin and the
    text similarity to the gold entity before and after, and to the original sentence."""
    vecs = np.asarray(
        encoder.embed([query_text(state.mention, state.original), query_text(state.mention, state.words)]), dtype=np.float32
    )
    return {
        "context": " ".join(state.words),
        "substitutions": state.edits,
        "margin": {"clean": _r(margin_clean), "attacked": _r(margin_attacked)},
        "text_similarity": {"clean": _r(float(vecs[0] @ state.refs[0])), "attacked": _r(float(vecs[1] @ state.refs[0]))},
        "sentence_similarity": _r(float(vecs[0] @ vecs[1])),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)
