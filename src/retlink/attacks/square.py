"""Square Attack, L-inf (Andriushchenko et al. 2020): a score-based black-box attack.

It needs the target's loss, never its gradient, so it attacks what has none: a pipeline whose
perception is thresholds and connected components (the MATE binding agent's scene parser,
`retlink.mate.attack.PerceptionTarget`), or any differentiable target queried as a black
box. Each query changes one random square window to a random vertex of the L-inf ball (+-eps a
channel) and keeps the change when the loss rises; the window shrinks on the paper's schedule.
Samples the target reports as adversarial stop querying. The start is the paper's: vertical
stripes of +-eps. Every iterate is a vertex of the ball, so the budget holds exactly.

Presets: normal eps 8/255, 100 queries, p_init 0.1; strong eps 8/255, 1000 queries, p_init 0.05.
`n_queries` counts loss evaluations per sample, the start included.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from retlink.attacks.base import Attack, take
from retlink.attacks.targets import Target


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """Share of the image the window covers at query `it` (the paper's schedule, rescaled from
    10,000 queries to `n_queries`)."""
    it = int(it / max(n_queries, 1) * 10000)
    for bound, div in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16), (200, 8), (50, 4), (10, 2)):
        if it > bound:
            return p_init / div
    return p_init


class Square(Attack):
    """L-inf Square Attack: random search over square windows at the vertices of the ball."""

    name = "square"
    budget_norm = "Linf"
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {"eps": 8 / 255, "n_queries": 100, "p_init": 0.1},
        "strong": {"eps": 8 / 255, "n_queries": 1000, "p_init": 0.05},
    }

    def __init__(
        self, target: Target, *, eps: float = 8 / 255, n_queries: int = 100, p_init: float = 0.1, **common: Any
    ) -> None:
        super().__init__(target, **common)
        self.eps = eps
        self.n_queries = n_queries
        self.p_init = p_init

    def perturb(self, x: torch.Tensor, y: Any, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        dev = x.device
        signs = torch.randint(0, 2, (b, c, 1, w), generator=generator, device=dev).to(x.dtype) * 2 - 1
        best = (x + self.eps * signs).clamp(0.0, 1.0)
        loss, success = self.evaluate(self.target, best, y)
        done = success.clone() if success is not None else torch.zeros(b, dtype=torch.bool, device=dev)
        for it in range(self.n_queries - 1):
            todo = (~done).nonzero().flatten()
            if todo.numel() == 0:
                break
            side = max(1, min(round(math.sqrt(p_selection(self.p_init, it, self.n_queries) * h * w)), h - 1, w - 1))
            delta = best[todo] - x[todo]
            for k in range(todo.numel()):
                top = int(torch.randint(0, h - side + 1, (1,), generator=generator, device=dev))
                left = int(torch.randint(0, w - side + 1, (1,), generator=generator, device=dev))
                vertex = torch.randint(0, 2, (c, 1, 1), generator=generator, device=dev).to(x.dtype) * 2 - 1
                delta[k, :, top : top + side, left : left + side] = self.eps * vertex
            candidate = (x[todo] + delta).clamp(0.0, 1.0)
            new_loss, new_success = self.evaluate(self.target, candidate, take(y, todo))
            better = new_loss > loss[todo]
            keep = todo[better]
            best[keep] = candidate[better]
            loss[keep] = new_loss[better]
            if new_success is not None:
                done[keep] = new_success[better]
        return best
