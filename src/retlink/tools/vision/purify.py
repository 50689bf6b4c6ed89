"""Input purification: cheap transformations that wash out small adversarial perturbations.

Each step has a PIL form (the pipeline's purify node) and a tensor form for evaluation. The
tensor form keeps the forward pass exact (the PIL steps themselves) and takes its gradient from a
differentiable approximation (BPDA, Athalye et al. 2018), so an adaptive attack can attack
*through* the purifier instead of being fooled by it: the resample's is torch's antialiased
bilinear down- and up-sampling (what PIL's does, up to rounding), so the attack's gradient knows
which frequencies the resample removes; JPEG, quantisation and the median have no useful
gradient and pass it straight through (the identity). An identity in place of the resample
would send the attack's budget into high frequencies the resample then washes out: a weaker
attack that would credit the purifier with robustness it does not have.

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


def differentiable_approximation(x: torch.Tensor, steps: tuple[PurifyStep, ...]) -> torch.Tensor:
    """A differentiable stand-in for the PIL steps on a (B, 3, H, W) batch: each resample as
    torch's antialiased bilinear down- and up-sampling, every other step the identity."""
    import torch.nn.functional as F

    for step in steps:
        if step.kind == "resample":
            h, w = x.shape[-2:]
            small = (max(1, round(h * step.scale)), max(1, round(w * step.scale)))
            x = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
            x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return x


class Purifier(torch.nn.Module):
    """Tensor purifier: exact forward (the PIL steps), the backward of a differentiable
    approximation (BPDA): the resample's own, the identity for the rest.

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
        approx = differentiable_approximation(x, self.steps)
        return approx + (purified - approx).detach()  # value of purified, gradient of the approximation
