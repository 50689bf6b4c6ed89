"""The adversarial fine-tuning step of an EfficientNet-Lite image encoder: one loop, two objectives.

- FARE (Schlarmann et al., "Robust CLIP", ICML 2024): min over the weights of the max over an
  L-inf ball of ||f(x + delta) - f_orig(x)||^2. Unsupervised: any images will do (a KB's own), and
  the tuned features stay where the original encoder put clean images, so a KB embedded before
  stays comparable in spirit (it is still re-embedded: the weights changed).
- MAT (multimodal adversarial training with one-to-many augmentation, the project's MAT paper):
  InfoNCE over in-batch negatives between a mention image (adversarial: PGD against the weights
  being trained, at every step; plus augmented views) and its gold entity's KB image.

Both inner maximisations are plain L-inf PGD (random start, sign steps, projection: the attack
library's own `projections`); the outer step trains the last `train_last_blocks` stages of the
network (and its head convolution) with batch-norm statistics frozen or not. The frozen prefix
runs without autograd on the weight step, which is most of what keeps the loop near a bare
forward + backward pass (`bench/robust_train.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from retlink.attacks.projections import project_image, random_start, steepest_step


@dataclass(frozen=True)
class PGDSettings:
    """The inner maximisation: L-inf budget, steps and step size."""

    eps: float
    steps: int
    step_size: float


class SplitEncoder:
    """A wrapped EfficientNet-Lite (`EfficientNetLite`) as a frozen prefix and a trainable suffix.

    `last_blocks`: how many of the network's stages (`net.blocks`) are trained, with the head
    convolution after them; None trains the whole network."""

    def __init__(self, model: nn.Module, last_blocks: int | None, freeze_bn_stats: bool) -> None:
        self.model = model
        self.net = model.net
        n = len(self.net.blocks)
        self.cut = 0 if last_blocks is None else max(0, n - last_blocks)
        self.freeze_bn_stats = freeze_bn_stats
        trainable: list[nn.Module] = [*list(self.net.blocks)[self.cut :], self.net.conv_head, self.net.bn2]
        if last_blocks is None:
            trainable += [self.net.conv_stem, self.net.bn1]
        for p in model.parameters():
            p.requires_grad_(False)
        self.params = [p for m in trainable for p in m.parameters()]
        for p in self.params:
            p.requires_grad_(True)
        self._trainable = trainable

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net.bn1(self.net.conv_stem(self.model._normalise(x)))
        for block in list(self.net.blocks)[: self.cut]:
            h = block(h)
        return h

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        for block in list(self.net.blocks)[self.cut :]:
            h = block(h)
        h = self.net.bn2(self.net.conv_head(h))
        return self.net.forward_head(h, pre_logits=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x))

    def attack_mode(self) -> None:
        """Everything in eval mode while PGD runs (no batch-norm statistics move)."""
        self.model.eval()

    def train_mode(self) -> None:
        """The weight step: the trained part in train mode unless its BN statistics are frozen."""
        self.model.eval()
        if not self.freeze_bn_stats:
            for m in self._trainable:
                m.train()


def pgd_linf(x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor], pgd: PGDSettings, generator: torch.Generator) -> torch.Tensor:
    """x + delta maximising `loss` (a scalar) in the L-inf ball: gradients w.r.t. the image only."""
    x_adv = random_start(x, pgd.eps, "Linf", generator)
    for _ in range(pgd.steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(x_adv), x_adv)
        x_adv = project_image(x, x_adv.detach() + pgd.step_size * steepest_step(grad, "Linf"), pgd.eps, "Linf")
    return x_adv.detach()


def fare_step(
    enc: SplitEncoder, x: torch.Tensor, target: torch.Tensor, pgd: PGDSettings, generator: torch.Generator
) -> torch.Tensor:
    """FARE's loss on one batch (backward not called): `target` is f_orig(x), the original
    encoder's clean features."""
    enc.attack_mode()
    x_adv = pgd_linf(x, lambda z: (enc.features(z) - target).pow(2).sum(-1).mean(), pgd, generator)
    enc.train_mode()
    with torch.no_grad():
        h = enc.prefix(x_adv)
    return (enc.suffix(h) - target).pow(2).sum(-1).mean()


def info_nce(queries: torch.Tensor, keys: torch.Tensor, gold: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of each query's cosine similarities to all keys (in-batch negatives)."""
    logits = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    return F.cross_entropy(logits, gold)


def mat_step(
    enc: SplitEncoder,
    mentions: torch.Tensor,
    views: list[torch.Tensor],
    entities: torch.Tensor,
    gold: torch.Tensor,
    pgd: PGDSettings,
    temperature: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """MAT's loss on one batch: each mention image, made adversarial against the current weights
    (PGD on the same InfoNCE), and its augmented `views` against the batch's distinct gold
    entity images (`entities`; `gold[i]` is mention i's row)."""
    enc.attack_mode()
    with torch.no_grad():
        keys = enc.features(entities)
    x_adv = pgd_linf(mentions, lambda z: info_nce(enc.features(z), keys, gold, temperature), pgd, generator)
    enc.train_mode()
    queries = torch.cat([x_adv, *views])
    with torch.no_grad():
        hq, hk = enc.prefix(queries), enc.prefix(entities)
    q, k = enc.suffix(hq), enc.suffix(hk)
    return info_nce(q, k, gold.repeat(1 + len(views)), temperature)


def bare_step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The physical limit the loop is measured against: one forward and backward pass of the
    whole network (gradients to every weight and the input)."""
    x = x.clone().requires_grad_(True)
    loss = model.features(x).pow(2).sum(-1).mean()
    loss.backward()
    return loss.detach()
