"""Targets: what the attack's gradient flows through, and the loss it raises.

An attack only knows images in [0, 1] and a `Target`; the target owns the model (with its
normalisation inside), the meaning of the label `y`, the per-sample loss to maximise and, when
the notion exists, which samples are already adversarial. Targeted and untargeted variants are a
property of the target, so every attack gets both for free.

- `ClassifierTarget`: logits models (the EfficientNet-Lite0 tagger, or a `ZeroShotClassifier`
  built from an image encoder and entity text embeddings). CE or DLR loss; CW's margin.
- `EmbeddingAwayTarget`: push an image embedding away from its clean embedding.
- `TextAlignmentTarget`: push an image embedding away from the correct entity's text embedding,
  and optionally toward a chosen wrong one.
- `CaptionerTarget`: raise the loss of the clean caption of an encoder-decoder captioner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "dlr")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless module)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


class Target(ABC):
    """A model plus the loss an attack maximises on it (per sample, higher = more adversarial)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def prepare(self, x: torch.Tensor, y: Any) -> Any:
        """Fill in or move the label for a batch before the attack starts (e.g. the clean
        embedding or caption when the caller passed none)."""
        return y

    @abstractmethod
    def loss_and_success(self, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One forward pass: per-sample loss (B,) and which samples are adversarial (B,) bool,
        or None where the target has no notion of success (embedding and caption losses)."""

    def loss(self, x: torch.Tensor, y: Any) -> torch.Tensor:
        """Per-sample loss (B,) the attacks maximise."""
        return self.loss_and_success(x, y)[0]


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020), to maximise; shift and scale invariant.

    Untargeted: -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3). Targeted (y = target class): the
    margin of the best non-target class over the target, over z_pi1 - (z_pi3 + z_pi4) / 2. The
    paper's targeted form uses the true class instead of the best non-target; with only the target
    label available this variant pushes the target class above all others, which is the goal.
    """
    if logits.shape[1] < (4 if targeted else 3):
        raise ValueError("the DLR loss needs at least 3 classes (4 when targeted)")
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    if targeted:
        return -(others - z_y) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)
    return -(z_y - others) / (top[:, 0] - top[:, 2] + 1e-12)


class ClassifierTarget(Target):
    """A logits model. Untargeted: y is the true class (default: the clean prediction); success
    means the prediction moved off it. Targeted: y is the class to reach; success means reached."""

    def __init__(self, model: nn.Module, *, loss: str = "ce", targeted: bool = False) -> None:
        super().__init__(model)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}: use one of {LOSSES}")
        self.loss_name = loss
        self.targeted = targeted

    def with_loss(self, loss: str) -> ClassifierTarget:
        """The same model and direction with another loss (APGD's `loss` parameter uses this)."""
        return ClassifierTarget(self.model, loss=loss, targeted=self.targeted)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float()

    def prepare(self, x: torch.Tensor, y: Any) -> torch.Tensor:
        if y is None:
            if self.targeted:
                raise ValueError("a targeted attack needs the target classes as labels")
            with torch.inference_mode():
                pred = self.logits(x).argmax(dim=1)
            return pred.clone()  # a normal tensor: inference tensors cannot enter autograd
        return torch.as_tensor(y, device=x.device).long().clone()  # never an inference tensor

    def loss_from_logits(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "dlr":
            return dlr_loss(logits, y, self.targeted)
        ce = F.cross_entropy(logits, y, reduction="none")
        return -ce if self.targeted else ce

    def success_from_logits(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pred = logits.argmax(dim=1)
        return pred == y if self.targeted else pred != y

    def margin(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """CW's margin: positive while the sample is not adversarial, negative once it is."""
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
        return others - z_y if self.targeted else z_y - others

    def loss_and_success(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(x)
        return self.loss_from_logits(logits, y), self.success_from_logits(logits.detach(), y)


class OpenClipImageEncoder(nn.Module):
    """An open_clip model's image tower taking [0, 1] images: resize to the tower's input size
    (differentiably) and normalise inside, so attacks perturb raw pixels. Returns unit vectors."""

    def __init__(
        self,
        clip_model: nn.Module,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        self.clip = clip_model
        visual = clip_model.visual
        size = getattr(visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        mean = mean or getattr(visual, "image_mean", None) or OPENAI_DATASET_MEAN
        std = std or getattr(visual, "image_std", None) or OPENAI_DATASET_STD
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=False)
        return self.clip.encode_image((x - self.mean) / self.std, normalize=True)


class ZeroShotClassifier(nn.Module):
    """Image encoder + a fixed matrix of entity text embeddings -> cosine logits, so the
    classifier attacks (APGD-DLR, CW, targeted CE) run against CLIP-style entity retrieval."""

    def __init__(self, image_encoder: nn.Module, text_embeddings: torch.Tensor, scale: float = 100.0) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.register_buffer("text", F.normalize(text_embeddings.float(), dim=-1))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(self.image_encoder(x).float(), dim=-1) @ self.text.T


class EmbeddingAwayTarget(Target):
    """Untargeted feature attack: maximise 1 - cos(f(x_adv), f(x_clean)). y is the clean
    embedding (B, D); computed from the clean batch when None."""

    def prepare(self, x: torch.Tensor, y: Any) -> torch.Tensor:
        if y is None:
            with torch.inference_mode():
                emb = self.model(x).float()
            return emb.clone()
        return torch.as_tensor(y, device=x.device).float().clone()

    def loss_and_success(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, None]:
        return 1.0 - F.cosine_similarity(self.model(x).float(), y, dim=-1), None


class TextAlignmentTarget(Target):
    """Attack image-to-text retrieval in embedding space.

    y (B, D): the correct entity's text embedding; loss = -cos(image, correct) (away from it).
    y (B, 2, D): [correct, wrong]; loss = cos(image, wrong) - cos(image, correct) (away from the
    correct and toward the chosen wrong entity); success once the wrong one is closer.
    """

    def prepare(self, x: torch.Tensor, y: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("TextAlignmentTarget needs the entity text embeddings as labels")
        y = F.normalize(torch.as_tensor(y, device=x.device).float().clone(), dim=-1)
        if y.dim() not in (2, 3) or (y.dim() == 3 and y.shape[1] != 2):
            raise ValueError("labels must be (B, D) correct embeddings or (B, 2, D) [correct, wrong]")
        return y

    def loss_and_success(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        img = F.normalize(self.model(x).float(), dim=-1)
        if y.dim() == 2:
            return -(img * y).sum(-1), None
        gap = (img * y[:, 1]).sum(-1) - (img * y[:, 0]).sum(-1)
        return gap, gap.detach() > 0


class CaptionerTarget(Target):
    """Raise the per-token cross-entropy of the clean caption of an encoder-decoder captioner
    (transformers `VisionEncoderDecoderModel` contract: `model(pixel_values=, decoder_input_ids=)`
    returns `.logits`, `model.generate(pixel_values=...)` captions).

    y: caption token ids (B, T) with -100 for padding; when None, the model's own greedy caption
    of the clean image, so the attack needs no reference text.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
        image_size: int | None = None,
        max_new_tokens: int = 16,
    ) -> None:
        super().__init__(model)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.image_size = image_size
        self.max_new_tokens = max_new_tokens
        cfg = model.config
        self.start_id = cfg.decoder_start_token_id
        self.pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
        self.eos_id = getattr(cfg, "eos_token_id", None) or getattr(cfg.decoder, "eos_token_id", None)
        if self.start_id is None:
            raise ValueError("the captioner's config needs decoder_start_token_id")

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_size and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def prepare(self, x: torch.Tensor, y: Any) -> torch.Tensor:
        if y is not None:
            return torch.as_tensor(y, device=x.device).long().clone()  # never an inference tensor
        with torch.inference_mode():
            ids = self.model.generate(
                pixel_values=self.pixels(x), max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1
            )[:, 1:]
        ids = ids.clone()
        labels = ids.masked_fill(ids == self.pad_id, -100) if self.pad_id != self.eos_id else ids
        if self.eos_id is not None:
            # keep the first EOS (the model must still predict it), drop everything after it
            after_eos = (ids == self.eos_id).long().cumsum(dim=1) - (ids == self.eos_id).long() > 0
            labels = labels.masked_fill(after_eos, -100)
        return labels

    def loss_and_success(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, None]:
        start = torch.full((y.shape[0], 1), self.start_id, dtype=torch.long, device=y.device)
        dec_in = torch.cat([start, y[:, :-1].masked_fill(y[:, :-1] == -100, self.pad_id)], dim=1)
        logits = self.model(pixel_values=self.pixels(x), decoder_input_ids=dec_in).logits.float()
        tok = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-100, reduction="none")
        mask = (y != -100).float()
        return (tok * mask).sum(1) / mask.sum(1).clamp_min(1.0), None
