"""Input purification: cheap transformations that wash out small adversarial perturbations.

Each step has a PIL form (the pipeline's purify node) and a tensor form for evaluation. The
tensor form keeps the forward pass exact and, for steps with no useful gradient (JPEG,
quantisation, median), passes the gradient straight through (BPDA, Athalye et al. 2018), so an
adaptive attack can attack *through* the purifier instead of being fooled by it.

Steps (chainable, applied in order):
- jpeg: re-encode at `quality` (Das et al. 2017, "Keeping the bad guys out");
- resample: down-scale by `scale` and back up (bilinear);
- bitdepth: keep `bits` bits per channel (feature squeezing, Xu et al. NDSS 2018);
- median: median filter of `size` pixels (feature squeezing).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageFilter

from retlink.core.schema import PurifyStep


def apply_pil(img: Image.Image, step: PurifyStep) -> Image.Image:
    """One step on a PIL RGB image."""
    if step.kind == "jpeg":
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=step.quality)
        buf.seek(0)
        return Image.open(buf).convert("RGB")
    if step.kind == "resample":
        w, h = img.size
        small = img.resize((max(1, round(w * step.scale)), max(1, round(h * step.scale))), Image.BILINEAR)
        return small.resize((w, h), Image.BILINEAR)
    if step.kind == "bitdepth":
        levels = 2**step.bits - 1
        arr = np.asarray(img, dtype=np.float32) / 255.0
        return Image.fromarray(
            np.clip(np.rint(np.rint(arr * levels) / levels * 255.0), 0, 255).astype(np.uint8)
        )
    if step.kind == "median":
        size = step.size if step.size % 2 else step.size + 1  # PIL needs an odd window
        return img.filter(ImageFilter.MedianFilter(size))
    raise ValueError(f"unknown purification step {step.kind!r}")


def purify_pil(img: Image.Image, steps: list[PurifyStep] | tuple[PurifyStep, ...]) -> Image.Image:
    for step in steps:
        img = apply_pil(img, step)
    return img


def _pil_roundtrip(x: torch.Tensor, steps: tuple[PurifyStep, ...]) -> torch.Tensor:
    """Apply PIL steps to a batch of [0, 1] tensors (exact forward of the pipeline)."""
    out = []
    for img in x.detach().clamp(0, 1).cpu():
        arr = (img.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        done = purify_pil(Image.fromarray(arr), steps)
        out.append(torch.from_numpy(np.asarray(done, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(out).to(x.device, x.dtype)


class Purifier(torch.nn.Module):
    """Tensor purifier: exact forward (the PIL steps), straight-through backward (BPDA).

    Put it in front of a model to attack the defended pipeline adaptively:
    `nn.Sequential(Purifier(steps), model)`.
    """

    def __init__(self, steps: list[PurifyStep] | tuple[PurifyStep, ...]) -> None:
        super().__init__()
        self.steps = tuple(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.steps:
            return x
        purified = _pil_roundtrip(x, self.steps)
        return x + (purified - x).detach()  # value of purified, gradient of identity
