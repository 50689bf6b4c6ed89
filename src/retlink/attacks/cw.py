"""Carlini & Wagner L2 (2017): the smallest L2 perturbation that flips a classifier.

Optimises w with Adam, x_adv = (tanh(w) + 1) / 2 (always a valid image), minimising
||x_adv - x||_2^2 + c * max(margin, -kappa), margin = z_y - max_{i != y} z_i (untargeted) or
max_{i != t} z_i - z_t (targeted). A binary search over c (`search_steps` > 1) trades size for
success. Returns, per sample, the smallest successful perturbation found within `eps` (an L2
budget, None for none), and the clean image where no success was found: CW is a
minimum-norm attack, so failure means "no adversarial example found", not a partial one.

Presets (c, kappa, steps, lr, search_steps, eps): normal 1.0, 0, 50, 0.01, 1, L2 1.0;
strong 10.0, 0, 100, 0.01, 3, L2 3.0 (the L2 radii match `pgd_l2`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from retlink.attacks.base import Attack
from retlink.attacks.projections import flat
from retlink.attacks.targets import ClassifierTarget, Target

_ATANH_LIMIT = 1 - 1e-6


class CW(Attack):
    """CW-L2 on a `ClassifierTarget` (it needs logits for the margin)."""

    name = "cw"
    budget_norm = "L2"
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {"c": 1.0, "kappa": 0.0, "steps": 50, "lr": 0.01, "search_steps": 1, "eps": 1.0},
        "strong": {"c": 10.0, "kappa": 0.0, "steps": 100, "lr": 0.01, "search_steps": 3, "eps": 3.0},
    }

    def __init__(
        self,
        target: Target,
        *,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 50,
        lr: float = 0.01,
        search_steps: int = 1,
        eps: float | None = 1.0,
        **common: Any,
    ) -> None:
        if not isinstance(target, ClassifierTarget):
            raise TypeError("CW needs a ClassifierTarget (a logits margin); use PGD for embedding targets")
        super().__init__(target, **common)
        if steps < 1 or search_steps < 1:
            raise ValueError("steps and search_steps must be at least 1")
        self.c, self.kappa, self.steps, self.lr, self.search_steps, self.eps = (
            c,
            kappa,
            steps,
            lr,
            search_steps,
            eps,
        )

    def perturb(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        target: ClassifierTarget = self.target  # type: ignore[assignment]
        b = x.shape[0]
        view = (-1, *([1] * (x.dim() - 1)))
        best = x.clone()
        best_l2 = torch.full((b,), math.inf, device=x.device)
        c = torch.full((b,), float(self.c), device=x.device)
        lower = torch.zeros(b, device=x.device)
        upper = torch.full((b,), math.inf, device=x.device)
        budget = math.inf if self.eps is None else float(self.eps)
        x = self.layout(x)
        w0 = torch.atanh((x * 2 - 1).clamp(-_ATANH_LIMIT, _ATANH_LIMIT))
        for _ in range(self.search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            hit = torch.zeros(b, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                with torch.enable_grad():
                    x_adv = (torch.tanh(w) + 1) / 2
                    with self.autocast():
                        logits = target.logits(x_adv)
                    l2_sq = flat(x_adv - x).pow(2).sum(dim=1)
                    margin = target.margin(logits, y)
                    objective = l2_sq + c * margin.clamp_min(-self.kappa)
                    (grad,) = torch.autograd.grad(objective.sum(), w)
                with torch.no_grad():
                    l2 = l2_sq.detach().sqrt()
                    ok = target.success_from_logits(logits.detach(), y) & (l2 < best_l2) & (l2 <= budget)
                    best = torch.where(ok.view(view), x_adv.detach(), best)
                    best_l2 = torch.where(ok, l2, best_l2)
                    hit |= ok
                w.grad = grad
                opt.step()
            # binary search on c: success -> try smaller, failure -> larger (x10 until bracketed)
            upper = torch.where(hit, torch.minimum(upper, c), upper)
            lower = torch.where(hit, lower, torch.maximum(lower, c))
            c = torch.where(torch.isinf(upper), c * 10, (lower + upper) / 2)
        return best
