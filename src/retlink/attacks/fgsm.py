"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps.

The cheapest attack and the weakest: a lower bound on what a budget can do.
Presets: normal eps 8/255; strong eps 16/255.
"""

from __future__ import annotations

from typing import Any

import torch

from retlink.attacks.base import Attack
from retlink.attacks.projections import clip_to_box, random_start
from retlink.attacks.targets import Target


class FGSM(Attack):
    """x_adv = clip(x + eps * sign(grad loss)); with `random_start`, the step is taken from a
    random point and projected back (R+FGSM-style), still inside the L-inf ball."""

    name = "fgsm"
    budget_norm = "Linf"
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {"eps": 8 / 255},
        "strong": {"eps": 16 / 255},
    }

    def __init__(
        self, target: Target, *, eps: float = 8 / 255, random_start: bool = False, **common: Any
    ) -> None:
        super().__init__(target, **common)
        self.eps = eps
        self.random_start = random_start

    def perturb(self, x: torch.Tensor, y: Any, generator: torch.Generator) -> torch.Tensor:
        start = random_start(x, self.eps, "Linf", generator) if self.random_start else x
        grad, _, _ = self.loss_grad(self.target, start, y)
        step = start + self.eps * grad.sign()
        return clip_to_box(x, (step - x).clamp(-self.eps, self.eps))
