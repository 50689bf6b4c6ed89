"""Template matching with an exact L-inf bound: the certified pipeline's shape evidence.

A pooled thumbnail (`retlink.tools.vision.certified`) compares an image with a KB image cell by
cell, so a logo drawn smaller, elsewhere, in other colours or inverted barely resembles its own
KB image. Template matching searches for the KB image's shape instead: the KB image's content
(its bounding box against the border colour), in grey, centred and scaled to unit L2 norm, is
slid over the query's grey map at several template sizes, and the feature is the largest
absolute correlation found,

    m(x) = max over sizes s and windows w of |t_s . x_w| / sqrt(n_s)

(x_w the query's cells under window w, n_s the template's cell count). The absolute value makes
it blind to inversion (a light logo on dark matches as well as a dark one on light), and since
the template sums to zero, a window's brightness offset does not count either.

The bound. The grey map is made of convex combinations of pixels (luma weights, then average
pooling), so under an L-inf perturbation of eps every cell moves by at most eps; a window's
correlation t_s . x_w moves by at most eps ||t_s||_1 (Hoelder), and so does its absolute value,
and a max of such terms moves by at most the largest of their moves. So for each size,

    max(p_s - eps w_s, 0) <= (the size's peak under attack) <= p_s + eps w_s,

with p_s the clean peak and w_s = ||t_s||_1 / sqrt(n_s), and the feature lies between the max
over sizes of the lower ends and the max of the upper ends (`TemplateMatch.bounds`): exact
arithmetic on two numbers per size, whatever the attacker does. The correlation is deliberately
not normalised by the window's own contrast: that denominator moves too (by up to eps sqrt(n) in
norm), and in a probe on logos DEV links the normalised form ranked better by itself at the same sizes, but
its bound was so wide that it certified no answer at 8/255, where the plain form certified a
good share of them. Sizes below half the query map were dropped for the same reason: small
templates fit background clutter and their peaks lie close together.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

#: the query's grey map side in cells
QUERY_SIDE = 64
#: template sizes (the longer side, in query cells): from half the query to all of it
TEMPLATE_SIDES: tuple[int, ...] = (32, 40, 48, 56, 64)
#: grey difference from the border colour above which a KB pixel is the logo's content
CONTENT_THRESHOLD = 0.08
#: ITU-R BT.601 luma weights: non-negative and summing to one, so grey is a convex combination
LUMA = (0.299, 0.587, 0.114)
#: what the template feature is computed with: a feature recorded or a head fitted under other
#: values is another feature of the same name (`retlink.eval.certified.feature_definition`)
DEFINITION = {
    "query_side": QUERY_SIDE,
    "template_sides": list(TEMPLATE_SIDES),
    "content_threshold": CONTENT_THRESHOLD,
    "luma": list(LUMA),
}


class TemplateMatch(NamedTuple):
    """One candidate's template evidence on one query: per template size, the clean peak p_s and
    the most an eps of 1 can move it, w_s (a perturbation of eps moves it by at most eps w_s)."""

    peaks: np.ndarray
    widths: np.ndarray

    @property
    def value(self) -> float:
        """The feature on the clean image: the best peak over sizes."""
        return float(self.peaks.max())

    def bounds(self, eps: float) -> tuple[float, float]:
        """The feature's lowest and highest value under any L-inf perturbation of eps."""
        low = float(np.maximum(self.peaks - eps * self.widths, 0.0).max())
        return low, float((self.peaks + eps * self.widths).max())


def grey(pixels: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) pixels in [0, 1] -> (..., H, W) luma: a convex combination of the channels."""
    r, g, b = pixels.unbind(-3)
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


def query_map(pixels: torch.Tensor, side: int = QUERY_SIDE) -> torch.Tensor:
    """(3, H, W) pixels -> the (side, side) grey map the templates are matched on (average
    pooling: every cell a mean of grey pixels, so it moves by at most eps). Differentiable."""
    g = grey(pixels if pixels.is_floating_point() else pixels.float())
    return F.adaptive_avg_pool2d(g[None, None], side)[0, 0]


def entity_templates(pixels: torch.Tensor, sides: tuple[int, ...] = TEMPLATE_SIDES) -> list[torch.Tensor]:
    """A KB image's templates: its content's bounding box (pixels whose grey differs from the
    border's median by more than `CONTENT_THRESHOLD`) in grey, resized so its longer side is each
    of `sides`, centred and scaled to unit L2 norm. Empty when the image has no content (a blank
    image matches nothing)."""
    g = grey(pixels.float())
    border = torch.cat([g[0], g[-1], g[:, 0], g[:, -1]]).median()
    ys, xs = torch.where((g - border).abs() > CONTENT_THRESHOLD)
    if len(ys) == 0:
        return []
    content = g[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = content.shape
    out = []
    for side in sides:
        scale = side / max(h, w)
        shape = (max(2, round(h * scale)), max(2, round(w * scale)))
        t = F.adaptive_avg_pool2d(content[None, None], shape)[0, 0]
        t = t - t.mean()
        norm = t.norm()
        if norm > 1e-6:
            out.append(t / norm)
    return out


def peaks(qmap: torch.Tensor, templates: list[torch.Tensor]) -> torch.Tensor:
    """Per template, max over windows of |t . x_w| / sqrt(n): differentiable in the query map
    (an attack can optimise through it). Templates larger than the map are skipped."""
    out = []
    side_h, side_w = qmap.shape
    for t in templates:
        if t.shape[0] > side_h or t.shape[1] > side_w:
            continue
        corr = F.conv2d(qmap[None, None], t[None, None].to(qmap.dtype))[0, 0]
        out.append(corr.abs().max() / math.sqrt(t.numel()))
    return torch.stack(out) if out else qmap.new_zeros(0)


def match(qmap: torch.Tensor, templates: list[torch.Tensor]) -> TemplateMatch | None:
    """The candidate's `TemplateMatch` on a query map, or None when it has no template (its
    feature is then the constant 0: nothing an attacker can move)."""
    usable = [t for t in templates if t.shape[0] <= qmap.shape[0] and t.shape[1] <= qmap.shape[1]]
    if not usable:
        return None
    with torch.no_grad():
        p = peaks(qmap.double(), [t.double() for t in usable]).numpy()
    widths = np.array([float(t.double().abs().sum()) / math.sqrt(t.numel()) for t in usable])
    return TemplateMatch(p.astype(np.float64), widths)
