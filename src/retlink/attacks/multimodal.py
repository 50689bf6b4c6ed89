"""MAT's multimodal attack: an image attack plus a one-word substitution in the sentence, chosen
against a text encoder (`attack: multimodal` in an eval config), and `LinkInput`, what reaches a
linker for one sample (the image, the mention, the sentence), which it attacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from retlink.attacks.base import Attack, take
from retlink.attacks.text import Substitution, TextEncoder, substitute_one_word, typo_variants


@dataclass(frozen=True)
class LinkInput:
    """What reaches a linker for one sample. `image` is (3, H, W) in [0, 1], or None when removed."""

    image: torch.Tensor | None
    mention: str
    context: str = ""


class MultimodalAttack:
    """Image attack plus a one-word substitution in each sample's context (`attack: multimodal`
    in an eval config, see `retlink.attacks.attacked.make_chunk`).

    The image half is any `Attack`; the text half picks, per sample, the word replacement that
    lowers cos(encoder(mention + context), correct entity embedding) the most (see
    `substitute_one_word`), BERT-Attack/TextFooler style when `candidates` proposes each word's
    neighbours in the encoder's own token space (`retlink.attacks.text.token_neighbours`; typo variants
    by default). Both halves are seeded.
    """

    def __init__(
        self,
        image_attack: Attack,
        encoder: TextEncoder,
        *,
        vocabulary: list[str] | None = None,
        max_vocabulary: int = 32,
        candidates: Callable[[str], list[str]] = typo_variants,
        seed: int = 0,
    ) -> None:
        self.image_attack = image_attack
        self.candidates = candidates
        self.encoder = encoder
        self.vocabulary = vocabulary or []
        self.max_vocabulary = max_vocabulary
        self.seed = seed

    def __call__(
        self, samples: list[LinkInput], references: np.ndarray, labels: Any = None
    ) -> tuple[list[LinkInput], list[Substitution]]:
        """Attack a batch: `references` (B, D) are the correct entities' text embeddings; `labels`
        go to the image attack's target. Samples without an image keep None."""
        with_image = [i for i, s in enumerate(samples) if s.image is not None]
        images: dict[int, torch.Tensor] = {}
        if with_image:
            batch = torch.stack([samples[i].image for i in with_image])  # type: ignore[misc]
            sel = take(labels, torch.tensor(with_image))
            images = dict(zip(with_image, self.image_attack(batch, sel), strict=True))
        out, edits = [], []
        for i, s in enumerate(samples):
            edit = substitute_one_word(
                s.context,
                references[i],
                self.encoder,
                prefix=s.mention,
                vocabulary=self.vocabulary,
                max_vocabulary=self.max_vocabulary,
                candidates=self.candidates,
                seed=self.seed + i,
            )
            edits.append(edit)
            out.append(LinkInput(images.get(i), s.mention, edit.text))
        return out, edits
