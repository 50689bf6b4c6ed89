"""PGD (Madry et al. 2018): projected gradient ascent from a random start, L-inf or L2.

Per step: one forward and one backward w.r.t. the input only. `early_stop` stops stepping a
sample once it is adversarial: which samples succeed is unchanged (samples are independent), but
their adversarial is the first successful iterate rather than the most confident one, which
transfers less well to other models; off by default, for when only the success rate matters. The loss and success of each
step's forward pass feed a best-iterate tracker, so restarts and keeping the best point cost no
extra model calls. Restarts after the first only attack the samples not yet adversarial.

Presets (eps, step size alpha, steps, restarts):
- `pgd`    normal: L-inf 8/255, 2/255, 10 steps, 1 restart; strong: 16/255, 2/255, 50 steps, 2 restarts.
- `pgd_l2` normal: L2 1.0, 0.2, 10 steps, 1 restart;       strong: 3.0, 0.5, 50 steps, 2 restarts.
(L2 radii are for 224 px images in [0, 1]; 1.0 there is about 0.33/255 average per coordinate.)
"""

from __future__ import annotations

from typing import Any

import torch

from retlink.attacks.base import Attack, BestTracker, take
from retlink.attacks.projections import project_image, random_start, steepest_step
from retlink.attacks.targets import Target


class PGD(Attack):
    """Projected gradient descent on the target's loss, L-inf (`norm="Linf"`) or L2."""

    name = "pgd"
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {"norm": "Linf", "eps": 8 / 255, "alpha": 2 / 255, "steps": 10, "restarts": 1},
        "strong": {"norm": "Linf", "eps": 16 / 255, "alpha": 2 / 255, "steps": 50, "restarts": 2},
        # MAT's adversarial examples: PGD, 2 steps at L-inf 2/255 (step 1/255, so the two steps
        # can reach the budget's edge)
        "mat": {"norm": "Linf", "eps": 2 / 255, "alpha": 1 / 255, "steps": 2, "restarts": 1},
    }

    def __init__(
        self,
        target: Target,
        *,
        norm: str = "Linf",
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        restarts: int = 1,
        random_start: bool = True,
        early_stop: bool = False,
        **common: Any,
    ) -> None:
        super().__init__(target, **common)
        if norm not in ("Linf", "L2"):
            raise ValueError(f"unknown norm {norm!r}: use 'Linf' or 'L2'")
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be at least 1")
        self.norm, self.eps, self.alpha = norm, eps, alpha
        self.steps, self.restarts, self.random_start = steps, restarts, random_start
        self.early_stop = early_stop

    def perturb(self, x: torch.Tensor, y: Any, generator: torch.Generator) -> torch.Tensor:
        # without a random start every restart would repeat the first run exactly
        restarts = self.restarts if self.random_start else 1
        return self.with_restarts(x, y, lambda xs, ys: self._single_run(xs, ys, generator), restarts)

    def _single_run(
        self, x: torch.Tensor, y: Any, generator: torch.Generator
    ) -> tuple[torch.Tensor, BestTracker]:
        x_adv = random_start(x, self.eps, self.norm, generator) if self.random_start else x.clone()
        tracker = BestTracker(x_adv)
        active: torch.Tensor | None = None  # rows still attacked; None = all (no gather copies)
        for _ in range(self.steps):
            xa, xc, ya = (x_adv, x, y) if active is None else (x_adv[active], x[active], take(y, active))
            grad, loss, success = self.loss_grad(self.target, xa, ya)
            tracker.update(xa, loss, success, active)
            stepped = project_image(xc, xa + self.alpha * steepest_step(grad, self.norm), self.eps, self.norm)
            if active is None:
                x_adv = stepped
            else:
                x_adv[active] = stepped
            if self.early_stop and success is not None:
                active = (torch.arange(x.shape[0], device=x.device) if active is None else active)[~success]
                if active.numel() == 0:
                    break
        return tracker.result(x_adv, lambda z: self.evaluate(self.target, z, y)), tracker


class PGDL2(PGD):
    """PGD under an L2 budget: the same algorithm with L2 presets."""

    name = "pgd_l2"
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {"norm": "L2", "eps": 1.0, "alpha": 0.2, "steps": 10, "restarts": 1},
        "strong": {"norm": "L2", "eps": 3.0, "alpha": 0.5, "steps": 50, "restarts": 2},
    }

    def __init__(
        self, target: Target, *, norm: str = "L2", eps: float = 1.0, alpha: float = 0.2, **kwargs: Any
    ) -> None:
        super().__init__(target, norm=norm, eps=eps, alpha=alpha, **kwargs)
