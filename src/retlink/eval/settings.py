"""Evaluation settings: which modalities reach the linker, and which of them are attacked.

From the MEL robustness literature (Wang et al. 2025, "On Evaluating the Adversarial Robustness
of Foundation Models for Multimodal Entity Linking"):
- I2T: image to text entity. Only the image reaches the linker (mention and context removed),
  so an image attack meets no textual help: the agent links from the caption and the image
  (alias table unused). `i2t_mention` keeps the bare mention (no sentence), the runner's I2T
  before the papers' definition was followed; its numbers are not the papers' I2T.
- IT2T: image + text to text entity. The image is attacked; mention and context are kept, the
  setting where context can compensate for a corrupted image.
Plus the missing-modality settings (image or text removed) and a multimodal attack (image attack
plus a one-word substitution in the context, chosen against a text encoder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np
import torch

from retlink.attacks.base import Attack, take
from retlink.attacks.text import Substitution, TextEncoder, substitute_one_word, typo_variants


class Setting(StrEnum):
    I2T = "i2t"
    I2T_MENTION = "i2t_mention"  # image + the bare mention (no sentence): not the papers' I2T
    IT2T = "it2t"
    IMAGE_ONLY = "image_only"  # text removed; the same inputs as I2T, named for missing-modality tables
    TEXT_ONLY = "text_only"  # image removed


@dataclass(frozen=True)
class LinkInput:
    """What reaches a linker for one sample. `image` is (3, H, W) in [0, 1], or None when removed."""

    image: torch.Tensor | None
    mention: str
    context: str = ""


def apply_setting(sample: LinkInput, setting: Setting | str) -> LinkInput:
    """The sample as the linker sees it in `setting` (attacking the image is done separately)."""
    setting = Setting(setting)
    if setting in (Setting.I2T, Setting.IMAGE_ONLY):
        return replace(sample, mention="", context="")
    if setting is Setting.I2T_MENTION:
        return replace(sample, context="")
    if setting is Setting.TEXT_ONLY:
        return replace(sample, image=None)
    return sample


class MultimodalAttack:
    """Image attack plus a one-word substitution in each sample's context (`attack: multimodal`
    in an eval config, see `retlink.eval.attacked`).

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
