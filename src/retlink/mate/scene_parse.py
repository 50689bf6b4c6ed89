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

from retlink.mate.scene import COLOURS

#: the named colours' hues (degrees), from the benchmark's CLEVR palette; gray has none
HUES = {k: colorsys.rgb_to_hsv(*(c / 255 for c in v))[0] * 360 for k, v in COLOURS.items() if k != "gray"}
GROUND_TOLERANCE = 0.05
MIN_AREA = 12


@dataclass
class Region:
    """One object found in the image."""

    mask: np.ndarray  # bool, the pixels of `box`
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    centroid: tuple[float, float]
    area: int
    color: str
    color_confidence: float


def ground_model(img: np.ndarray) -> np.ndarray:
    """The ground's brightness per row, (H, 1, 1), estimated from the image alone.

    The ground is the smooth surface that reaches the image border (objects never do): pixels
    whose colour barely changes to their neighbours, connected to the border. Object edges break
    that smoothness, so a flat object face, grey or not, is never taken for ground. Each row's
    ground is the median of those pixels; rows without enough of them take their neighbours'.
    """
    d = np.zeros(img.shape[:2])
    d[:, :-1] = np.abs(np.diff(img, axis=1)).max(axis=2)
    d[:-1, :] = np.maximum(d[:-1, :], np.abs(np.diff(img, axis=0)).max(axis=2))
    smooth = d < 0.02
    labels, _ = ndimage.label(smooth)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    ground = np.isin(labels, border[border > 0])
    h = img.shape[0]
    values = np.full(h, np.nan)
    bright = img.max(axis=2)
    for y in range(h):
        v = bright[y][ground[y]]
        if v.size >= 8:
            values[y] = float(np.median(v))
    known = np.flatnonzero(~np.isnan(values))
    if known.size == 0:
        return np.median(bright, axis=1)[:, None, None]
    return np.interp(np.arange(h), known, values[known])[:, None, None]


def segment(img: np.ndarray) -> list[Region]:
    """Objects of an RGB float image (H, W, 3) in [0, 1] as regions, largest first."""
    diff = np.abs(img - ground_model(img)).max(axis=2)  # the ground is grey: one value for R, G, B
    mask = ndimage.binary_opening(diff > GROUND_TOLERANCE, iterations=1)
    labels, _ = ndimage.label(mask)
    regions = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        crop = ndimage.binary_fill_holes(labels[sl] == k)
        area = int(crop.sum())
        if area < MIN_AREA:
            continue
        ys, xs = np.nonzero(crop)
        y0, x0 = sl[0].start, sl[1].start
        color, conf = colour_of(img[sl], crop)
        box = (x0, y0, sl[1].stop, sl[0].stop)
        regions.append(Region(crop, box, (float(xs.mean() + x0), float(ys.mean() + y0)), area, color, conf))
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
    hues = hue_degrees(px[colourful])
    names = list(HUES)
    centres = np.array([HUES[k] for k in names])
    dist = np.abs((hues[:, None] - centres[None, :] + 180) % 360 - 180)
    votes = np.bincount(dist.argmin(axis=1), minlength=len(names))
    best = int(votes.argmax())
    return names[best], float(votes[best] / votes.sum())


def hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """HSV hue in degrees of (N, 3) RGB values (vectorised `colorsys.rgb_to_hsv`)."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    mx, mn = rgb.max(axis=1), rgb.min(axis=1)
    span = np.maximum(mx - mn, 1e-9)
    h = np.where(mx == r, (g - b) / span, np.where(mx == g, 2.0 + (b - r) / span, 4.0 + (r - g) / span))
    return (h * 60.0) % 360.0


def iou(a: np.ndarray, box_a: tuple[int, int, int, int], b: np.ndarray, box_b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two masks given on their own boxes (x0, y0, x1, y1)."""
    ix0, iy0 = max(box_a[0], box_b[0]), max(box_a[1], box_b[1])
    ix1, iy1 = min(box_a[2], box_b[2]), min(box_a[3], box_b[3])
    if ix1 <= ix0 or iy1 <= iy0:
        return 0.0
    sa = a[iy0 - box_a[1] : iy1 - box_a[1], ix0 - box_a[0] : ix1 - box_a[0]]
    sb = b[iy0 - box_b[1] : iy1 - box_b[1], ix0 - box_b[0] : ix1 - box_b[0]]
    inter = float(np.logical_and(sa, sb).sum())
    union = float(a.sum() + b.sum()) - inter
    return inter / union if union else 0.0
