"""Evaluation settings: which modalities reach the linker, and which of them are attacked.

From the MEL robustness literature (Wang et al. 2025, "On Evaluating the Adversarial Robustness
of Foundation Models for Multimodal Entity Linking"):
- I2T: image to text entity. Only the image reaches the linker (mention and context removed),
  so an image attack meets no textual help: the agent links from the caption and the image
  (alias table unused). `i2t_mention` keeps the bare mention (no sentence), the runner's I2T
  before the papers' definition was followed; its numbers are not the papers' I2T.
- IT2T: image + text to text entity. The image is attacked; mention and context are kept, the
  setting where context can compensate for a corrupted image.
Plus the missing-modality settings (image or text removed). The attacks on the sentence (word
substitutions, alone or jointly with the image's PGD) are `retlink.attacks.text_attack` and
`retlink.attacks.multimodal`.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from retlink.attacks.multimodal import LinkInput


class Setting(StrEnum):
    I2T = "i2t"
    I2T_MENTION = "i2t_mention"  # image + the bare mention (no sentence): not the papers' I2T
    IT2T = "it2t"
    IMAGE_ONLY = "image_only"  # text removed; the same inputs as I2T, named for missing-modality tables
    TEXT_ONLY = "text_only"  # image removed


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
