"""Gaussian noise: the non-adversarial image perturbation (sensor noise, heavy compression
artefacts), beside the adversarial attacks so it is made, stored and reported the same way.

x_noisy = clip(x + N(0, std^2)), seeded; the target is ignored (no gradient), so the surrogate
does not matter. Presets: normal std 8/255; strong std 16/255; mat 2/255. `eps` is the std, so
the report's budget column and the accuracy-vs-eps plot read it like an attack's budget.
"""

from __future__ import annotations

from typing import Any

import torch

from retlink.attacks.base import Attack
from retlink.attacks.targets import Target


class GaussianNoise(Attack):
    """Additive Gaussian noise of standard deviation `eps`, clipped to [0, 1]."""

    name = "gaussian_noise"
    adversarial = False
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {"eps": 8 / 255},
        "strong": {"eps": 16 / 255},
        "mat": {"eps": 2 / 255},
    }

    def __init__(self, target: Target, *, eps: float = 8 / 255, **common: Any) -> None:
        super().__init__(target, **common)
        self.eps = eps

    def perturb(self, x: torch.Tensor, y: Any, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + self.eps * noise).clamp(0.0, 1.0)
