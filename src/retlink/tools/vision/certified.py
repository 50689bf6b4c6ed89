"""Certified image evidence: a nearest-thumbnail decision with an exact L-inf robustness radius.

Purification and detection are gradient-obfuscation defences that an adaptive attacker (BPDA,
EOT) undoes. Here the image feature is chosen so that its change under an attack has a known
exact bound, which turns the decision into a *certificate*: an answer that provably no image
perturbation within eps can flip.

The feature: a `size` x `size` average-pooled RGB thumbnail of the image in [0, 1]
(`torch.nn.functional.adaptive_avg_pool2d`, flattened). Each cell is the mean of a block of
pixels, a convex combination (non-negative weights summing to one), so when every pixel moves by
at most eps (an L-inf perturbation of size eps) every cell moves by at most eps too. The same
holds for any resize made of convex combinations (area or bilinear downsampling), but not for a
bicubic or Lanczos one (negative weights: a cell can move by more than eps), which is why the
pooling is done here on the pixels the caller hands over and nothing else resamples them after
the attacker's perturbation.

The decision: with x the query thumbnail and b_j the candidates' thumbnails, the answer is the
nearest candidate, best = argmin_j d_j with d_j = ||x - b_j||^2. For a thumbnail perturbation
delta with ||delta||_inf <= eps,

    d_j(x + delta) - d_best(x + delta) = d_j - d_best + 2 delta . (b_best - b_j)
                                       >= d_j - d_best - 2 eps ||b_j - b_best||_1

(the quadratic terms ||delta||^2 cancel; Hoelder's inequality bounds the linear one). So `best`
stays the answer for every such delta when d_j - d_best > 2 eps ||b_j - b_best||_1 for every
rival j, and the certified radius is min_j (d_j - d_best) / (2 ||b_j - b_best||_1). The bound is
tight on the thumbnail: delta = eps * sign(b_j - b_best) reaches it (the *vertex attack*); only
the [0, 1] box of real pixels can make an attack weaker than that. A radius of 1 or more is
reported as 1 (`MAX_RADIUS`): an L-inf ball of radius 1 already holds every image in [0, 1].
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from retlink.core.errors import InvalidImageError
from retlink.core.types import Entity

log = logging.getLogger(__name__)
T = TypeVar("T")

#: thumbnail side in cells (8 x 8 x RGB = 192 features)
DEFAULT_SIZE = 8
#: side of the square view a non-tensor image (a KB image, a query given as a file) is
#: preprocessed to before pooling: the eval's input size, so both sides are cropped alike
VIEW_SIZE = 224
#: every image in [0, 1] lies within L-inf 1 of any other: a larger radius says nothing more
MAX_RADIUS = 1.0


class Certificate(NamedTuple):
    """The nearest candidate, whether it is certified at the eps asked, and its radius."""

    best: int
    certified: bool
    #: the largest eps at which `best` is certified (capped at `MAX_RADIUS`)
    radius: float


def thumbnail(pixels: torch.Tensor, size: int = DEFAULT_SIZE) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) float pixels in [0, 1] -> (3*size*size,) or (B, 3*size*size).

    Adaptive average pooling: each cell a mean of pixels, so it moves by at most eps under an
    L-inf perturbation of eps (see the module docstring); differentiable, so an attack can
    optimise through it."""
    if pixels.dim() not in (3, 4) or pixels.shape[-3] != 3:
        raise InvalidImageError(
            f"a thumbnail needs (3, H, W) or (B, 3, H, W) pixels, not {tuple(pixels.shape)}"
        )
    x = pixels.unsqueeze(0) if pixels.dim() == 3 else pixels
    out = F.adaptive_avg_pool2d(x.float(), size).flatten(1)
    return out[0] if pixels.dim() == 3 else out


def view_pixels(image: Any) -> torch.Tensor:
    """The (3, H, W) pixels in [0, 1] a certificate is about.

    A float tensor is taken as it is (the runner's clean or attacked input: no 8-bit rounding,
    which would move pixels by up to 0.5/255 after the attacker chose them); anything else
    (a path, bytes, a PIL image, an array) is loaded and preprocessed to `VIEW_SIZE` like a KB
    image, so query and KB thumbnails are made alike."""
    from retlink.tools.images import load_image
    from retlink.tools.vision.efficientnet import preprocess

    if isinstance(image, torch.Tensor) and torch.is_floating_point(image):
        x = image.detach().cpu().float()
        if x.dim() == 4 and x.shape[0] == 1:
            x = x[0]
        if x.dim() != 3 or x.shape[0] != 3:
            raise InvalidImageError(f"image tensor has shape {tuple(image.shape)}; expected (3, H, W)")
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise InvalidImageError("image tensor values must be finite and in [0, 1]")
        return x
    return preprocess(load_image(image), VIEW_SIZE)


def image_thumbnail(image: Any, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The float64 thumbnail of any image input (`view_pixels`, then `thumbnail`)."""
    return thumbnail(view_pixels(image), size).numpy().astype(np.float64)


def certified_radius(query: np.ndarray, candidates: np.ndarray) -> tuple[int, float]:
    """(index of the nearest candidate, its certified radius) for thumbnails `query` (D,) and
    `candidates` (N, D), N >= 1.

    radius = min over rivals j of (d_j - d_best) / (2 ||b_j - b_best||_1), in float64; a rival
    at the same distance (a tie, or the same thumbnail) gives 0: nothing is certified. With no
    rival the answer does not depend on the image: `MAX_RADIUS`."""
    q = np.asarray(query, dtype=np.float64)
    b = np.asarray(candidates, dtype=np.float64)
    if b.ndim != 2 or b.shape[0] == 0 or q.shape != b.shape[1:]:
        raise ValueError(f"candidates must be (N >= 1, {q.shape[0] if q.ndim else '?'}), not {b.shape}")
    d = ((b - q) ** 2).sum(axis=1)
    best = int(np.argmin(d))  # the first of tied minima
    margins = np.delete(d - d[best], best)
    l1 = np.delete(np.abs(b - b[best]).sum(axis=1), best)
    if margins.size == 0:
        return best, MAX_RADIUS
    with np.errstate(divide="ignore", invalid="ignore"):
        radii = np.where(l1 > 0, margins / (2.0 * l1), 0.0)
    return best, float(min(max(radii.min(), 0.0), MAX_RADIUS))


def certify(query: np.ndarray, candidates: np.ndarray, eps: float) -> Certificate:
    """Certificate of the nearest candidate at L-inf `eps`: certified when
    d_j - d_best > 2 eps ||b_j - b_best||_1 for every rival j (strict: at equality the vertex
    attack makes a tie), checked exactly as written rather than through the radius."""
    best, radius = certified_radius(query, candidates)
    q = np.asarray(query, dtype=np.float64)
    b = np.asarray(candidates, dtype=np.float64)
    d = ((b - q) ** 2).sum(axis=1)
    l1 = np.abs(b - b[best]).sum(axis=1)
    rivals = np.arange(len(b)) != best
    certified = bool(np.all((d - d[best])[rivals] > 2.0 * eps * l1[rivals]))
    return Certificate(best, certified, radius)


def vertex_attack(query: np.ndarray, best: np.ndarray, rival: np.ndarray, eps: float) -> np.ndarray:
    """The worst thumbnail perturbation of size eps against `best` in favour of `rival`:
    x + eps * sign(rival - best), which lowers d_rival - d_best by exactly 2 eps ||rival - best||_1
    (the bound `certify` uses is reached by it)."""
    return np.asarray(query, dtype=np.float64) + eps * np.sign(
        np.asarray(rival, np.float64) - np.asarray(best, np.float64)
    )


class KBImageCache(Generic[T]):
    """What a KB's entities' images give (a thumbnail, templates), made lazily for the
    candidates a link asks about and kept in memory; thread-safe. An entity's value is its
    first readable image's: one fixed value per entity keeps a certificate exact (the best of
    several images would need a looser bound). `image_file` resolves a stored image path
    (`KBStore.image_file`); `derive` turns an image file into the value."""

    def __init__(self, image_file: Any, derive: Callable[[Path], T]) -> None:
        self.image_file = image_file
        self.derive = derive
        self._cache: dict[str, T | None] = {}
        self._lock = threading.Lock()

    def get(self, entity: Entity) -> T | None:
        """The entity's value, or None when it has no readable image."""
        with self._lock:
            if entity.id in self._cache:
                return self._cache[entity.id]
        value = None
        for path in entity.image_paths:
            file: Path = self.image_file(path)
            try:
                value = self.derive(file)
                break
            except (InvalidImageError, OSError) as e:  # an unreadable image: try the entity's next one
                log.warning("entity %s: image %s unreadable: %s", entity.id, file, e)
        with self._lock:
            self._cache[entity.id] = value
        return value


_SHARED: dict[tuple[str, str, str], KBImageCache[Any]] = {}
_SHARED_LOCK = threading.Lock()


def _shared(kb: Any, what: str, derive: Callable[[Path], Any]) -> KBImageCache[Any]:
    """The process-wide cache of one derived value (`what`) of a KB's images (`KBStore`):
    pipelines on the same KB share it. Keyed by the manifest too, so a KB rebuilt in place (its
    images may differ) gets a fresh cache."""
    key = (kb.where, json.dumps(kb.manifest, sort_keys=True, default=str), what)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = KBImageCache(kb.image_file, derive)
        return _SHARED[key]


def kb_thumbnails(kb: Any, size: int = DEFAULT_SIZE) -> KBImageCache[np.ndarray]:
    """The KB's entity thumbnails at one size."""
    return _shared(kb, f"thumbnail-{size}", lambda file: image_thumbnail(file, size))


def kb_templates(kb: Any) -> KBImageCache[list[torch.Tensor]]:
    """The KB's entity templates (`retlink.tools.vision.templates`)."""
    from retlink.tools.vision.templates import entity_templates

    return _shared(kb, "templates", lambda file: entity_templates(view_pixels(file)))
