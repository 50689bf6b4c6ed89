"""MAT's multimodal attack, optimised jointly (`attack: multimodal` in an eval config), and
`LinkInput`, what reaches a linker for one sample (the image, the mention, the sentence).

MAT's threat model (image PGD plus a one-token BERT-Attack on the text) with both halves on one
objective, the pipelines' fused score (`retlink.attacks.text_attack`): per entity,
S(e) = fused(cos(text(mention + sentence), T_e), cos(f(image), I_e)), and the attack raises
max over wrong entities of S minus S(gold), over the gold entity and the wrong entities that
score highest on the clean input. It alternates, for `rounds` rounds: pick the wrong entity the
current image and sentence score highest, take PGD steps on the image toward it and away from the
gold entity (`f`: the surrogate's features; its share of the `steps`), then one greedy word
substitution on the same fused score with the image as it now is, while the text budget
(`max_substitutions`) lasts. Because the wrong entity is chosen again each round from both halves'
scores, the image steps follow the entity the edited sentence leans to and the next edit is
chosen against the image the steps made: one objective, not two attacks side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from retlink.attacks.base import frozen
from retlink.attacks.projections import project_image, random_start, steepest_step
from retlink.attacks.text_attack import (
    SentenceState,
    TextAttack,
    describe,
    fused,
    greedy_step,
    margin,
    query_text,
)
from retlink.attacks.word_candidates import Proposer


@dataclass(frozen=True)
class LinkInput:
    """What reaches a linker for one sample. `image` is (3, H, W) in [0, 1], or None when removed."""

    image: torch.Tensor | None
    mention: str
    context: str = ""


def split_steps(steps: int, rounds: int) -> list[int]:
    """`steps` PGD steps over `rounds` rounds, as evenly as possible, earlier rounds first
    (10 over 3: [4, 3, 3]); a round may get none when there are more rounds than steps."""
    return [steps // rounds + (r < steps % rounds) for r in range(rounds)]


class JointMultimodalAttack:
    """Alternating image PGD steps and word substitutions on one fused objective (module docstring).

    `image_attack` is the PGD whose budget (`eps`, `alpha`, `norm`, `steps`, `random_start`, seed)
    the image half uses, with its target `TextAlignmentTarget` on the surrogate's features;
    `text` holds the text half's parameters; `propose` gives the word candidates.
    """

    def __init__(self, image_attack: Any, text: TextAttack, encoder: Any, propose: Proposer, *, rounds: int = 2) -> None:
        if rounds < 1:
            raise ValueError("rounds must be at least 1")
        self.image_attack, self.text, self.encoder, self.propose, self.rounds = image_attack, text, encoder, propose, rounds

    def __call__(
        self, x: torch.Tensor, entity_images: torch.Tensor, has_image: torch.Tensor, sentences: list[SentenceState | None]
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Attack a batch: `x` (B, 3, H, W); `entity_images` (B, K, D) unit surrogate features of each
        sample's candidate entities (gold first; a row without an image is ignored where `has_image`
        (B, K) is False); `sentences[b]` the sample's sentence against the same K entities, None
        where the text half cannot attack (no sentence, the gold entity not in the KB: the image
        half alone, away from the gold entity's image). Returns the attacked images and, per
        sample, the stored record of its sentence attack ({} for None)."""
        pgd, text = self.image_attack, self.text
        target = pgd.target
        device = target.device
        x = x.detach().to(device)
        refs = entity_images.to(device)
        mask = has_image.to(device)
        generator = torch.Generator(device=device).manual_seed(pgd.seed)
        x_adv = random_start(x, pgd.eps, pgd.norm, generator) if pgd.random_start else x.clone()
        clean_sims = self._image_sims(target, x, refs, mask)
        first = [self._margin(s, clean_sims[b]) if s is not None else None for b, s in enumerate(sentences)]
        rows = torch.arange(x.shape[0], device=device)
        with torch.inference_mode(False), frozen(target.model):
            for steps in split_steps(pgd.steps, self.rounds):
                # the wrong entity the current image and sentence score highest, per sample
                image_sims = self._image_sims(target, x_adv, refs, mask)
                wrong = [self._best_wrong(s, image_sims[b]) for b, s in enumerate(sentences)]
                y = target.prepare(x, torch.stack([refs[:, 0], refs[rows, torch.tensor(wrong, device=device)]], dim=1))
                for _ in range(steps):
                    grad, _, _ = pgd.loss_grad(target, x_adv, y)
                    x_adv = project_image(x, x_adv + pgd.alpha * steepest_step(grad, pgd.norm), pgd.eps, pgd.norm).detach()
                image_sims = self._image_sims(target, x_adv, refs, mask)
                for b, s in enumerate(sentences):
                    if s is None or len(s.edits) >= text.max_substitutions:  # no text, or its budget spent
                        continue
                    s.image_sims = image_sims[b]
                    greedy_step(
                        s, self.encoder, self.propose,
                        text_weight=text.text_weight, image_weight=text.image_weight, min_similarity=text.min_similarity,
                    )
        image_sims = self._image_sims(target, x_adv, refs, mask)
        records = []
        for b, s in enumerate(sentences):
            if s is None:
                records.append({})
                continue
            s.image_sims = image_sims[b]
            records.append(describe(s, self.encoder, first[b], self._margin(s, image_sims[b])))
        return x_adv.detach(), records

    def _margin(self, s: SentenceState, image_sims: np.ndarray) -> float:
        """The fused margin of a sentence as it now is, with the given image similarities."""
        vec = np.asarray(self.encoder.embed([query_text(s.mention, s.words)])[0], dtype=np.float32)
        return float(margin(fused((vec @ s.refs.T)[None], image_sims, self.text.text_weight, self.text.image_weight))[0])

    @staticmethod
    def _image_sims(target: Any, x: torch.Tensor, refs: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        """(B, K) cosines of the images' surrogate features with each entity's, NaN without an image."""
        with torch.inference_mode():
            feats = F.normalize(target.model(x).float(), dim=-1)
            sims = torch.einsum("bd,bkd->bk", feats, refs.float())
            sims = sims.masked_fill(~mask, float("nan"))
        return sims.cpu().numpy()

    def _best_wrong(self, s: SentenceState | None, image_sims: np.ndarray) -> int:
        """Index (1..K-1) of the wrong entity with the highest fused score that has an image (the
        image steps need one to move toward; without a sentence, the image score alone); 1 when
        none has."""
        scores = image_sims.copy()
        if s is not None:
            vec = np.asarray(self.encoder.embed([query_text(s.mention, s.words)])[0], dtype=np.float32)
            scores = fused((vec @ s.refs.T)[None], image_sims, self.text.text_weight, self.text.image_weight)[0]
        scores = np.where(np.isnan(image_sims), -np.inf, scores)
        scores[0] = -np.inf
        return int(np.argmax(scores)) if np.isfinite(scores).any() else 1
