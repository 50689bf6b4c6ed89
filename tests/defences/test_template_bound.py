"""The template-matching feature's bound (`retlink.tools.vision.templates`) against the strongest
attacks on it: PGD on the pixels never takes the feature outside its bounds, the vertex attack on
the peak window reaches the upper bound exactly, and a decision head's certificate over exact and
template evidence (`retlink.agent.decision.bounds`) is never broken by PGD on the pixels aimed at
its margin."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from retlink.agent.decision import DecisionHead
from retlink.agent.decision.bounds import BoundedPool, certify_head
from retlink.tools.vision.templates import entity_templates, match, peaks, query_map

SIDE, SIZES = 12, (6, 9, 12)  # the query map and the template sizes (small, so PGD is quick)
PIXELS = 2 * SIDE  # every cell the mean of a disjoint 2 x 2 block


def _kb_image(rng: np.random.Generator) -> torch.Tensor:
    """A random dark shape on a white page: the kind of image templates are cut from."""
    img = torch.ones(3, 48, 48)
    top, left = (int(v) for v in rng.integers(4, 16, 2))
    h, w = (int(v) for v in rng.integers(16, 30, 2))
    img[:, top : top + h, left : left + w] = torch.from_numpy(rng.uniform(0, 0.6, (3, h, w))).float()
    return img


def _query(rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(rng.uniform(0.25, 0.75, (3, PIXELS, PIXELS))).double()


def _feature(pixels: torch.Tensor, templates: list[torch.Tensor]) -> torch.Tensor:
    return peaks(query_map(pixels.double(), SIDE), [t.double() for t in templates]).max()


def _signed_feature(x: torch.Tensor, templates: list[torch.Tensor], sign: float) -> torch.Tensor:
    return sign * _feature(x, templates)


def _logits(
    x: torch.Tensor, exact: np.ndarray, coef: np.ndarray, templates: list[list[torch.Tensor]]
) -> torch.Tensor:
    feats = torch.stack([_feature(x, t) for t in templates])
    return torch.from_numpy(exact) * float(coef[0]) + feats * float(coef[1])


def _rival_gain(x: torch.Tensor, answer: int, rival: int, **pool) -> torch.Tensor:
    z = _logits(x, **pool)
    return z[rival] - z[answer]


def _pgd(pixels: torch.Tensor, objective, eps: float, steps: int = 40) -> torch.Tensor:
    """Maximise `objective` over the L-inf ball of eps around `pixels` (within [0, 1])."""
    x = pixels.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(x), x)
        with torch.no_grad():
            x = x + eps / 8 * grad.sign()
            x = torch.min(torch.max(x, pixels - eps), pixels + eps).clamp(0, 1)
    return x.detach()


def test_a_blank_image_has_no_template_and_no_feature():
    assert entity_templates(torch.ones(3, 32, 32)) == []
    assert match(torch.zeros(SIDE, SIDE), []) is None


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_pgd_never_moves_the_feature_outside_its_bounds_and_the_vertex_attack_reaches_the_top(eps):
    rng = np.random.default_rng(7)
    for _ in range(4):
        templates = entity_templates(_kb_image(rng), SIZES)
        pixels = _query(rng)
        m = match(query_map(pixels, SIDE), templates)
        assert m is not None and len(m.peaks) == len(templates)
        low, high = m.bounds(eps)
        assert low <= m.value <= high
        up = _feature(
            _pgd(pixels, partial(_signed_feature, templates=templates, sign=1.0), eps), templates
        ).item()
        down = _feature(
            _pgd(pixels, partial(_signed_feature, templates=templates, sign=-1.0), eps), templates
        ).item()
        assert low - 1e-9 <= down <= m.value <= up <= high + 1e-9
        # the vertex attack: every cell of the size's peak window moved by eps along the
        # template's sign (times the correlation's), which raises that peak by eps ||t||_1
        best = int(np.argmax(m.peaks + eps * m.widths))
        t = templates[best].double()
        qmap = query_map(pixels, SIDE)
        corr = torch.nn.functional.conv2d(qmap[None, None], t[None, None])[0, 0]
        row, col = divmod(int(corr.abs().argmax()), corr.shape[1])
        cells = torch.zeros(SIDE, SIDE, dtype=torch.float64)
        cells[row : row + t.shape[0], col : col + t.shape[1]] = eps * t.sign() * corr[row, col].sign()
        vertex = pixels + cells.repeat_interleave(2, 0).repeat_interleave(2, 1)[None]
        assert _feature(vertex, templates).item() == pytest.approx(high, abs=1e-9)


def test_a_head_certificate_over_template_evidence_is_never_broken_by_pgd():
    """Random pools of 2-4 candidates with an exact feature and the template feature; for each
    certified answer, PGD on the query pixels against the answer's margin over every rival
    never makes the margin fall to 0."""
    rng = np.random.default_rng(3)
    eps, certified, broken_uncertified = 4 / 255, 0, 0
    for _ in range(12):
        n = int(rng.integers(2, 5))
        templates = [entity_templates(_kb_image(rng), SIZES) for _ in range(n)]
        pixels = _query(rng)
        qmap = query_map(pixels, SIDE)
        matches = [match(qmap, t) for t in templates]
        rows = np.stack([rng.normal(0, 1.0, n), [m.value for m in matches]], axis=1)
        head = DecisionHead(
            features=["exact", "template"],
            nil_features=["n0"],
            mean=np.zeros(2),
            scale=np.ones(2),
            weights=np.array([1.0, float(rng.choice([-1, 1]) * rng.uniform(5, 40))]),
            nil_bias=-50.0,
            nil_weights=np.zeros(1),
        )
        pool = BoundedPool(
            rows, np.zeros(1), None, {}, np.zeros(1), [np.zeros(1)] * n, spans={1: list(matches)}
        )
        cert = certify_head(head, pool, eps)
        pool_args = {"exact": rows[:, 0], "coef": head.weights / head.scale, "templates": templates}
        for rival in range(n):
            if rival == cert.answer:
                continue
            attacked = _pgd(pixels, partial(_rival_gain, answer=cert.answer, rival=rival, **pool_args), eps)
            margin = -_rival_gain(attacked, cert.answer, rival, **pool_args).item()
            if cert.certified:
                assert margin > 0, "PGD broke a certified answer"
            elif margin <= 0:
                broken_uncertified += 1
        certified += cert.certified
    # both kinds of case occurred, so the check above checked something, and the attack is strong
    # enough to break answers the bound does not certify
    assert 0 < certified < 12 and broken_uncertified > 0
