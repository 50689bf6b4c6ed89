"""The small base every image attack shares.

An attack takes images as float tensors in [0, 1] (normalisation lives in the model wrapper)
and a `Target`, and returns adversarial images of the same shape. The base owns what must be the
same for every attack: input checks, batching, seeding (a private `torch.Generator`, so a fixed
seed reproduces the attack bit for bit on CPU without touching global RNG state), device
placement, optional mixed precision on CUDA, eval mode and frozen parameters during the attack
(gradients are taken w.r.t. the input only, so the model never gets `.grad`), and the preset
machinery (`from_preset(target, "strong", steps=20)`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from retlink.attacks.targets import Target

log = logging.getLogger(__name__)

_RANGE_TOLERANCE = 1e-6


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Eval mode and `requires_grad=False` on every parameter for the duration; restore after.

    Eval mode because batch-norm statistics and dropout must not move with the attack; frozen
    parameters so autograd never builds weight-gradient work the attack does not need.
    """
    modes = [(m, m.training) for m in module.modules()]
    trainable = [p for p in module.parameters() if p.requires_grad]
    module.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)
        for m, mode in modes:
            m.training = mode


def take(y: Any, index: slice | torch.Tensor) -> Any:
    """Select rows of a label batch (tensor, list or None) by slice or index tensor."""
    if y is None:
        return None
    if isinstance(y, torch.Tensor):
        return y[index]
    if isinstance(index, slice):
        return y[index]
    return [y[i] for i in index.tolist()]


class BestTracker:
    """Keeps, per sample, the best iterate seen: a successful one first (highest loss among
    successful), else the highest loss. Costs no forward pass: it is fed the loss and success the
    attack already computed for its gradient."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.detach().clone()
        self.loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        self.found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.has_success = False

    def update(
        self,
        x: torch.Tensor,
        loss: torch.Tensor,
        success: torch.Tensor | None,
        index: torch.Tensor | None = None,
    ) -> None:
        """Record iterates `x` with their loss and success; `index` names their rows when the
        attack only stepped a subset of the batch (early stopping)."""
        loss = loss.detach().float()
        best_loss = self.loss if index is None else self.loss[index]
        found = self.found if index is None else self.found[index]
        if success is None:
            better = loss > best_loss
        else:
            self.has_success = True
            better = (success & ~found) | ((success == found) & (loss > best_loss))
            found = found | success
        new_loss = torch.where(better, loss, best_loss)
        best_x = self.x if index is None else self.x[index]
        new_x = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x.detach(), best_x)
        if index is None:
            self.loss, self.found, self.x = new_loss, found, new_x
        else:
            self.loss[index], self.found[index], self.x[index] = new_loss, found, new_x

    def result(self, x_last: torch.Tensor, evaluate: Any) -> torch.Tensor:
        """The attack's output given its last (not yet evaluated) iterate.

        With a success criterion, samples never found adversarial return the last iterate, as the
        reference implementations do, without another forward pass. Without one, the last iterate
        is evaluated (`evaluate(x) -> (loss, success)`) and the highest loss wins.
        """
        if self.has_success:
            keep = self.found.view(-1, *([1] * (x_last.dim() - 1)))
            return torch.where(keep, self.x, x_last.detach())
        loss, success = evaluate(x_last)
        self.update(x_last, loss, success)
        return self.x


class Attack(ABC):
    """Base class: subclasses set `name`, `presets` and implement `perturb` on one batch.

    Subclass `__init__` parameters (besides `target`) are the attack's parameters: `params`
    reads them back for manifests and reports, and presets are just dicts of them.
    """

    name: ClassVar[str]
    presets: ClassVar[dict[str, dict[str, Any]]]
    #: whether it searches for the input that fools the target (False: a random view or noise,
    #: kept in the registry to be made and stored the same way); the report's worst-case column
    #: takes the worst over the adversarial ones only
    adversarial: ClassVar[bool] = True
    #: the norm `eps` bounds when the attack has no `norm` parameter (None: no such budget)
    budget_norm: ClassVar[str | None] = None

    def __init__(
        self,
        target: Target,
        *,
        seed: int = 0,
        batch_size: int | None = None,
        amp: bool = False,
        amp_dtype: torch.dtype = torch.bfloat16,
        channels_last: bool | None = None,
    ) -> None:
        if not isinstance(target, Target):
            raise TypeError(f"target must be a Target, got {type(target).__name__}")
        self.target = target
        self.seed = seed
        self.batch_size = batch_size
        self.amp = amp
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last

    @classmethod
    def from_preset(cls, target: Target, preset: str = "normal", **overrides: Any) -> Attack:
        """Build with a documented preset, any parameter overridden by keyword."""
        if preset not in cls.presets:
            raise KeyError(f"{cls.name} has no preset {preset!r}; presets: {sorted(cls.presets)}")
        return cls(target, **{**cls.presets[preset], **overrides})

    @property
    def params(self) -> dict[str, Any]:
        """Every parameter of this attack, JSON-friendly, for manifests and reports."""
        out: dict[str, Any] = {}
        for klass in type(self).__mro__:
            if "__init__" not in vars(klass) or klass is object:
                continue
            for name, p in inspect.signature(klass.__init__).parameters.items():
                if name in ("self", "target") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    continue
                value = getattr(self, name)
                out.setdefault(name, str(value) if isinstance(value, torch.dtype) else value)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    # -- running ---------------------------------------------------------------------------

    def __call__(self, images: torch.Tensor, labels: Any = None) -> torch.Tensor:
        """Attack `images` (B, 3, H, W) or (3, H, W), floats in [0, 1]; returns the same shape
        on the same device. `labels` are what the target expects (None: the target's default)."""
        if not torch.is_floating_point(images):
            raise TypeError("images must be float tensors in [0, 1]")
        single = images.dim() == 3
        x_all = images.unsqueeze(0) if single else images
        if x_all.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W) or (C, H, W), got {tuple(images.shape)}")
        if x_all.numel() and (x_all.min() < -_RANGE_TOLERANCE or x_all.max() > 1 + _RANGE_TOLERANCE):
            raise ValueError("images must lie in [0, 1]; normalisation belongs inside the model wrapper")
        device = self.target.device
        x_all = x_all.detach().to(device=device, dtype=torch.float32).clamp(0.0, 1.0)
        if single and isinstance(labels, torch.Tensor) and labels.dim() == 0:
            labels = labels.unsqueeze(0)
        generator = torch.Generator(device=device).manual_seed(self.seed)
        step = self.batch_size or x_all.shape[0] or 1
        outputs = []
        # inference_mode(False): a caller's inference_mode would forbid the input gradient
        with torch.inference_mode(False), frozen(self.target.model):
            for start in range(0, x_all.shape[0], step):
                x = self.layout(x_all[start : start + step])
                y = self.target.prepare(x, take(labels, slice(start, start + step)))
                outputs.append(self.perturb(x, y, generator).detach())
                log.debug("%s: batch %d-%d done", self.name, start, start + x.shape[0])
        adv = torch.cat(outputs) if outputs else x_all.clone()
        adv = adv.contiguous().to(images.device)  # back to the caller's memory format
        return adv[0] if single else adv

    @abstractmethod
    def perturb(self, x: torch.Tensor, y: Any, generator: torch.Generator) -> torch.Tensor:
        """Attack one batch already on the target's device; labels already prepared."""

    # -- helpers for subclasses --------------------------------------------------------------

    def with_restarts(
        self,
        x: torch.Tensor,
        y: Any,
        single_run: Callable[[torch.Tensor, Any], tuple[torch.Tensor, BestTracker]],
        restarts: int,
    ) -> torch.Tensor:
        """Run `single_run` up to `restarts` times, each later run only on the samples not yet
        adversarial (or, for loss-only targets, on all, keeping each sample's highest loss)."""
        adv = x.clone()
        todo = torch.arange(x.shape[0], device=x.device)
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        for _ in range(restarts):
            out, tracker = single_run(x[todo], take(y, todo))
            if tracker.has_success:
                adv[todo] = out
                todo = todo[~tracker.found]
            else:
                better = tracker.loss > best_loss[todo]
                adv[todo[better]] = out[better]
                best_loss[todo[better]] = tracker.loss[better]
            if todo.numel() == 0:
                break
        return adv

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass, on CUDA only (CPU autocast is slower here)."""
        if self.amp and self.target.device.type == "cuda":
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-last memory layout for the model call when enabled (None: auto). oneDNN runs
        EfficientNet-Lite0 fwd+bwd NHWC about 1.2x faster on 2 CPU cores; on an H100 in fp32 NCHW
        was faster, under bf16 autocast NHWC suits the tensor cores. The gradient comes back in
        the same layout, so the iterates keep it for free."""
        use = self.channels_last
        if use is None:  # auto: measured faster on CPU, and on CUDA only under autocast
            use = x.device.type == "cpu" or self.amp
        if use and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def loss_grad(
        self, target: Target, x: torch.Tensor, y: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Gradient of the summed per-sample loss w.r.t. the input only, plus the loss and success
        of this forward pass (so trackers need no extra pass). Samples are independent, so the
        sum gives each sample its own gradient."""
        x = self.layout(x).detach().requires_grad_(True)
        with torch.enable_grad(), self.autocast():
            loss, success = target.loss_and_success(x, y)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return grad.detach(), loss.detach().float(), success

    def evaluate(self, target: Target, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Loss and success without building a graph."""
        with torch.inference_mode(), self.autocast():
            loss, success = target.loss_and_success(self.layout(x), y)
        return loss.float().clone(), None if success is None else success.clone()
