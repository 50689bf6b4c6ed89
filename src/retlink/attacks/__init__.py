"""Image attacks (and the text attack) on a small shared base, one attack a file, and the targets they attack.

    from retlink.attacks import build_attack, ClassifierTarget
    attack = build_attack("pgd", ClassifierTarget(model), preset="strong", steps=20, seed=1)
    x_adv = attack(images)            # images: float (B, 3, H, W) in [0, 1]

`ATTACKS` maps names to classes; each class documents its `normal` and `strong` presets, and any
parameter can be overridden by keyword.
"""

from __future__ import annotations

from typing import Any

from retlink.attacks.adaptive import PGDBPDA, PGDEOT, PGDDetectorAware
from retlink.attacks.apgd import APGD, APGDL2
from retlink.attacks.augment import Augment
from retlink.attacks.base import Attack, frozen
from retlink.attacks.cw import CW
from retlink.attacks.fgsm import FGSM
from retlink.attacks.noise import GaussianNoise
from retlink.attacks.pgd import PGD, PGDL2
from retlink.attacks.square import Square
from retlink.attacks.targets import (
    CaptionerTarget,
    ClassifierTarget,
    EmbeddingAwayTarget,
    OpenClipImageEncoder,
    Target,
    TextAlignmentTarget,
    ZeroShotClassifier,
)
from retlink.attacks.text_attack import TextAttack

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (FGSM, PGD, PGDL2, APGD, APGDL2, CW)}
# score-based (black box): needs the target's loss only, so it attacks non-differentiable targets
ATTACKS[Square.name] = Square
# non-adversarial: random noise (no gradient), stored and reported like the attacks
ATTACKS[GaussianNoise.name] = GaussianNoise
# adaptive attacks through the pipeline's defences (BPDA, EOT, detector-aware): see adaptive.py
ATTACKS.update({cls.name: cls for cls in (PGDBPDA, PGDEOT, PGDDetectorAware)})
# word substitutions in the sentence, the image untouched (BERT-Attack style; see text_attack.py)
ATTACKS[TextAttack.name] = TextAttack
# not an attack: random views for training-time one-to-many augmentation (see augment.py)
ATTACKS[Augment.name] = Augment


def build_attack(name: str, target: Target, preset: str = "normal", **overrides: Any) -> Attack:
    """The attack `name` on `target` with a preset (`normal` or `strong`) and overrides."""
    try:
        cls = ATTACKS[name]
    except KeyError:
        raise KeyError(f"unknown attack {name!r}; known: {sorted(ATTACKS)}") from None
    return cls.from_preset(target, preset, **overrides)


def presets() -> dict[str, dict[str, dict[str, Any]]]:
    """Every attack's presets, for docs and config validation."""
    return {name: {k: dict(v) for k, v in cls.presets.items()} for name, cls in ATTACKS.items()}


__all__ = [
    "APGD",
    "APGDL2",
    "ATTACKS",
    "CW",
    "FGSM",
    "PGD",
    "PGDL2",
    "Attack",
    "Augment",
    "CaptionerTarget",
    "ClassifierTarget",
    "EmbeddingAwayTarget",
    "GaussianNoise",
    "OpenClipImageEncoder",
    "Square",
    "Target",
    "TextAlignmentTarget",
    "TextAttack",
    "ZeroShotClassifier",
    "build_attack",
    "frozen",
    "presets",
]
