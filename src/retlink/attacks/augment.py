"""augment: a random, non-adversarial view of each image (MAT's one-to-many augmentation).

Not an attack: it ignores the target's gradient. It lives in the attack registry so that
training data for the decision head (`retlink train`) is made by the one runner, with the same
storage, seeding and resume as the attacked images: an `augment` entry in an eval config gives
each sample one more view, a random resized crop, colour jitter and a JPEG re-encode, as a news
photo differs from the picture in the KB. Several entries with different seeds give several views.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from retlink.attacks.base import Attack
from retlink.attacks.targets import Target


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    arr = (x.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(out).permute(2, 0, 1)


class Augment(Attack):
    """Random crop (keeping `min_area` to 1 of the image), brightness/contrast/saturation jitter
    of +-`jitter`, JPEG at a quality drawn from `jpeg_quality`; seeded per batch."""

    name = "augment"
    adversarial = False
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {"min_area": 0.6, "jitter": 0.25, "jpeg_quality": (40, 90)},
        "strong": {"min_area": 0.4, "jitter": 0.4, "jpeg_quality": (25, 75)},
    }

    def __init__(
        self,
        target: Target,
        *,
        min_area: float = 0.6,
        jitter: float = 0.25,
        jpeg_quality: tuple[int, int] | list[int] = (40, 90),
        **common: Any,
    ) -> None:
        super().__init__(target, **common)
        if not 0 < min_area <= 1:
            raise ValueError("min_area must be in (0, 1]")
        self.min_area = min_area
        self.jitter = jitter
        self.jpeg_quality = tuple(jpeg_quality)

    def perturb(self, x: torch.Tensor, y: Any, generator: torch.Generator) -> torch.Tensor:
        def u(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=generator, device=generator.device))

        out = []
        size = x.shape[-2:]
        for img in x.detach().float().cpu():
            h, w = img.shape[-2:]
            area = u(self.min_area, 1.0)
            ch, cw = max(8, round(h * area**0.5)), max(8, round(w * area**0.5))
            top, left = round(u(0, h - ch)), round(u(0, w - cw))
            view = F.interpolate(img[None, :, top : top + ch, left : left + cw], size=size, mode="bilinear", align_corners=False)[0]
            mean = view.mean()
            view = (view - mean) * u(1 - self.jitter, 1 + self.jitter) + mean  # contrast
            view = view * u(1 - self.jitter, 1 + self.jitter)  # brightness
            grey = view.mean(dim=0, keepdim=True)
            view = (view - grey) * u(1 - self.jitter, 1 + self.jitter) + grey  # saturation
            view = _jpeg(view.clamp(0, 1), round(u(*self.jpeg_quality)))
            out.append(view)
        return torch.stack(out).to(x.device)
