"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"): PGD with momentum and a step size that halves itself.

Step size starts at 2 * eps. At checkpoints w_j = ceil(p_j * steps), p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), a sample's step size halves and it restarts
from its best point when (1) its loss rose in fewer than rho = 75% of the steps since the last
checkpoint, or (2) the step size was not reduced last time and the best loss has not improved
since. The update mixes the projected step with momentum: x <- P(x + a (z - x) + (1 - a)(x - x_prev)),
a = 0.75 (1 on the first step). Loss: CE or DLR (shift and scale invariant, robust to gradient
masking by logit scaling); `loss` overrides the classifier target's loss.

Presets (eps, steps, restarts, loss): `apgd` normal L-inf 8/255, 20 steps, 1, CE; strong 16/255,
50 steps, 2, DLR. `apgd_l2` normal L2 1.0, 20 steps, 1, CE; strong 3.0, 50 steps, 2, DLR.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from retlink.attacks.base import Attack, BestTracker
from retlink.attacks.projections import project_image, random_start, steepest_step
from retlink.attacks.targets import ClassifierTarget, Target

RHO = 0.75
MOMENTUM = 0.75


def checkpoints(steps: int) -> list[int]:
    """Iterations (1-based counts of steps done) at which APGD checks its step size."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    marks = sorted({math.ceil(q * steps) for q in p[1:] if q <= 1.0})
    return [m for m in marks if 0 < m <= steps]


class APGD(Attack):
    """Auto-PGD, L-inf or L2, CE or DLR loss (or the target's own loss when `loss` is None)."""

    name = "apgd"
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {"norm": "Linf", "eps": 8 / 255, "steps": 20, "restarts": 1, "loss": "ce"},
        "strong": {"norm": "Linf", "eps": 16 / 255, "steps": 50, "restarts": 2, "loss": "dlr"},
    }

    def __init__(
        self,
        target: Target,
        *,
        norm: str = "Linf",
        eps: float = 8 / 255,
        steps: int = 20,
        restarts: int = 1,
        loss: str | None = "ce",
        **common: Any,
    ) -> None:
        if loss is not None:
            if not isinstance(target, ClassifierTarget):
                raise TypeError(
                    f"loss={loss!r} needs a ClassifierTarget; pass loss=None to use the target's loss"
                )
            target = target.with_loss(loss)
        super().__init__(target, **common)
        if norm not in ("Linf", "L2"):
            raise ValueError(f"unknown norm {norm!r}: use 'Linf' or 'L2'")
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be at least 1")
        self.norm, self.eps, self.steps, self.restarts, self.loss = norm, eps, steps, restarts, loss

    def perturb(self, x: torch.Tensor, y: Any, generator: torch.Generator) -> torch.Tensor:
        return self.with_restarts(x, y, lambda xs, ys: self._single_run(xs, ys, generator), self.restarts)

    def _single_run(
        self, x: torch.Tensor, y: Any, generator: torch.Generator
    ) -> tuple[torch.Tensor, BestTracker]:
        b = x.shape[0]
        view = (-1, *([1] * (x.dim() - 1)))
        x_cur = random_start(x, self.eps, self.norm, generator)
        grad, loss, success = self.loss_grad(self.target, x_cur, y)
        tracker = BestTracker(x_cur)
        tracker.update(x_cur, loss, success)
        # the loss-best point and its gradient, where a sample restarts after a step-size cut
        x_max, grad_max, loss_max = x_cur.clone(), grad.clone(), loss.clone()
        eta = torch.full((b,), 2.0 * self.eps, device=x.device)
        x_prev = x_cur.clone()
        increases = torch.zeros(b, device=x.device)
        loss_at_check = loss_max.clone()
        reduced_at_check = torch.ones(b, dtype=torch.bool, device=x.device)  # no condition 2 at first check
        marks, last_mark = checkpoints(self.steps), 0
        for k in range(self.steps):
            z = project_image(x, x_cur + eta.view(view) * steepest_step(grad, self.norm), self.eps, self.norm)
            a = 1.0 if k == 0 else MOMENTUM
            x_new = project_image(
                x, x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), self.eps, self.norm
            )
            x_prev, x_cur = x_cur, x_new
            prev_loss = loss
            grad, loss, success = self.loss_grad(self.target, x_cur, y)
            tracker.update(x_cur, loss, success)
            increases += (loss > prev_loss).float()
            improved = loss > loss_max
            x_max = torch.where(improved.view(view), x_cur, x_max)
            grad_max = torch.where(improved.view(view), grad, grad_max)
            loss_max = torch.where(improved, loss, loss_max)
            if k + 1 in marks:
                too_few = increases < RHO * (k + 1 - last_mark)
                stalled = ~reduced_at_check & (loss_max <= loss_at_check)
                cut = too_few | stalled
                eta = torch.where(cut, eta / 2, eta)
                x_cur = torch.where(cut.view(view), x_max, x_cur)
                grad = torch.where(cut.view(view), grad_max, grad)
                x_prev = torch.where(cut.view(view), x_cur, x_prev)  # no momentum across a restart
                reduced_at_check, loss_at_check = cut, loss_max.clone()
                increases.zero_()
                last_mark = k + 1
        # the last iterate was evaluated inside the loop, so nothing is left unevaluated
        return tracker.x, tracker


class APGDL2(APGD):
    """APGD under an L2 budget: the same algorithm with L2 presets."""

    name = "apgd_l2"
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {"norm": "L2", "eps": 1.0, "steps": 20, "restarts": 1, "loss": "ce"},
        "strong": {"norm": "L2", "eps": 3.0, "steps": 50, "restarts": 2, "loss": "dlr"},
    }

    def __init__(self, target: Target, *, norm: str = "L2", eps: float = 1.0, **kwargs: Any) -> None:
        super().__init__(target, norm=norm, eps=eps, **kwargs)
