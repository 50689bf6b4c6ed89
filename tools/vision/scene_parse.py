"""Perception tools for rendered 3D scenes (MATE): find the objects, read their colour, and
compare a found object with a hypothesis rendered from the text.

Only the image is read here. `segment` finds objects as connected regions that differ from the
ground (the ground is estimated from the image itself, row by row, since it only fades with
distance); `colour_of` names the colour from the hue of the object's saturated pixels (shading
and reflections scale and grey a colour but keep its hue), or gray when few pixels are
saturated. `silhouette_iou` is analysis by synthesis: it renders where an object described by
the text (position, size, rotation) would appear under the benchmark's camera as each shape and
measures the overlap with a found region, which both links regions to text objects and tells
the shape.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: the named colours' hues (degrees); gray has none
_HUES: dict[str, tuple[int, int, int]] = {
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
HUES = {k: colorsys.rgb_to_hsv(*(c / 255 for c in v))[0] * 360 for k, v in _HUES.items()}
GROUND_TOLERANCE = 0.05
MIN_AREA = 12


@dataclass
class Region:
    """One object found in the image."""

    mask: np.ndarray  # bool, full image size
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    centroid: tuple[float, float]
    area: int
    color: str
    color_confidence: float


def ground_model(img: np.ndarray) -> np.ndarray:
    """The ground's brightness per row, (H, 1, 1): the ground is the grey that fills most rows and
    fades smoothly with distance, so a quadratic in the row index is fitted (robustly, twice) to
    the median of each row's grey pixels. Rows mostly covered by objects borrow from the fit."""
    mx, mn = img.max(axis=2), img.min(axis=2)
    grey = (mx - mn) < 0.04
    rows, meds = [], []
    for y in range(img.shape[0]):
        values = mx[y][grey[y]]
        if values.size >= 20:
            rows.append(y)
            meds.append(float(np.median(values)))
    ys, vs = np.array(rows, dtype=float), np.array(meds)
    keep = np.ones(len(ys), dtype=bool)
    for _ in range(3):
        coef = np.polyfit(ys[keep], vs[keep], 2)
        keep = np.abs(np.polyval(coef, ys) - vs) < 0.02
    return np.polyval(coef, np.arange(img.shape[0], dtype=float))[:, None, None]


def segment(img: np.ndarray) -> list[Region]:
    """Objects of an RGB float image (H, W, 3) in [0, 1] as regions, largest first."""
    diff = np.abs(img - ground_model(img)).max(axis=2)
    mask = diff > GROUND_TOLERANCE
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, n = ndimage.label(mask)
    regions = []
    for k in range(1, n + 1):
        m = labels == k
        area = int(m.sum())
        if area < MIN_AREA:
            continue
        m = ndimage.binary_fill_holes(m)
        ys, xs = np.nonzero(m)
        color, conf = colour_of(img, m)
        regions.append(
            Region(m, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                   (float(xs.mean()), float(ys.mean())), int(m.sum()), color, conf)
        )
    regions.sort(key=lambda r: -r.area)
    return regions


def colour_of(img: np.ndarray, mask: np.ndarray) -> tuple[str, float]:
    """(colour name, share of the votes it got) from the object's inner pixels."""
    inner = ndimage.binary_erosion(mask, iterations=1)
    px = img[inner if inner.sum() >= 6 else mask]
    mx, mn = px.max(axis=1), px.min(axis=1)
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    colourful = (sat > 0.3) & (mx > 0.08)
    if colourful.mean() < 0.25:
        return "gray", float(1 - colourful.mean())
    hues = np.array([colorsys.rgb_to_hsv(*p)[0] * 360 for p in px[colourful]])
    names = list(HUES)
    centres = np.array([HUES[k] for k in names])
    dist = np.abs((hues[:, None] - centres[None, :] + 180) % 360 - 180)
    votes = np.bincount(dist.argmin(axis=1), minlength=len(names))
    best = int(votes.argmax())
    return names[best], float(votes[best] / votes.sum())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0
