"""Adaptive attacks: PGD through the defence instead of around it.

A defence that transforms the input (JPEG, resampling, bit-depth, median) or that refuses
inputs it finds suspicious (feature squeezing) is only credited honestly when the attack knows
it is there (Tramèr, Carlini, Brendel and Madry, NeurIPS 2020, "On adaptive attacks to
adversarial example defenses"). Purifiers are non-differentiable and, once randomised, a moving
target, so a plain gradient attack on the bare model looks defeated without the defence having
done anything a stronger attacker could not undo. Athalye, Carlini and Wagner (ICML 2018,
"Obfuscated gradients give a false sense of security") give the two tools used here:

- BPDA: the exact purifier in the forward pass, the identity in the backward pass
  (`retlink.tools.vision.purify.Purifier` already does this);
- EOT: the loss averaged over random draws of the purifier (JPEG quality, resample scale), so
  the perturbation survives the whole family rather than one draw of it.

Three attacks are registered (all PGD underneath, so presets and budgets match `pgd`):
- `pgd_bpda`: PGD on the target seen through the configured purifier (BPDA, one draw);
- `pgd_eot`: the same with the loss averaged over `eot_samples` jittered purifiers;
- `pgd_detector_aware`: `pgd_eot`'s loss minus `detector_weight` times how far the feature
  squeezing score (Xu, Evans and Qi, NDSS 2018) sits above `threshold - detector_margin`; the
  score is computed differentiably (softmax of the image vs its BPDA-squeezed copies), and a
  sample only counts as adversarial when it is both misclassified and under the threshold. The
  score is the detector's network: the target's own by default, or `classifier` (a module, or a
  `defence.detector.model` name such as "efficientnet_lite1") when the detector runs on another.

They wrap whatever target the caller built (classifier, embedding, text alignment), so they
attack the whole differentiable path of a pipeline: purifier plus classifier or image embedder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from retlink.attacks.pgd import PGD
from retlink.attacks.targets import ClassifierTarget, Target
from retlink.core.networks import DEFAULT_NETWORK
from retlink.core.schema import DefenceConfig, DetectorConfig, PurifyStep
from retlink.tools.vision.purify import Purifier

#: what the pipeline purifies a flagged image with by default (DefenceConfig.purify_when_flagged)
DEFAULT_PURIFY: tuple[dict[str, Any], ...] = ({"kind": "jpeg", "quality": 75},)
#: EOT ranges around each step's configured value (jpeg quality, resample scale)
QUALITY_JITTER = 20
SCALE_JITTER = 0.2


def parse_steps(steps: Sequence[PurifyStep | dict[str, Any]] | None) -> tuple[PurifyStep, ...]:
    """Purification steps from config dicts or `PurifyStep`s (None: the pipeline's default)."""
    raw = DEFAULT_PURIFY if steps is None else steps
    return tuple(s if isinstance(s, PurifyStep) else PurifyStep.model_validate(s) for s in raw)


def jittered(step: PurifyStep, generator: torch.Generator) -> PurifyStep:
    """One random draw of a step around its configured value (the EOT distribution).

    JPEG quality and resample scale are drawn uniformly in a window that contains the deployed
    value; bit depth and median are deterministic and kept as they are.
    """
    u = float(torch.rand((), generator=generator))
    if step.kind == "jpeg":
        lo, hi = max(10, step.quality - QUALITY_JITTER), min(95, step.quality + QUALITY_JITTER)
        return step.model_copy(update={"quality": round(lo + u * (hi - lo))})
    if step.kind == "resample":
        lo, hi = max(0.25, step.scale - SCALE_JITTER), min(0.95, step.scale + SCALE_JITTER)
        return step.model_copy(update={"scale": lo + u * (hi - lo)})
    return step


class RandomPurifier(nn.Module):
    """A purifier whose forward is the exact PIL pipeline, per image with its own random draw
    when `jitter` is on, and whose backward is the identity (BPDA)."""

    def __init__(self, steps: Sequence[PurifyStep], *, jitter: bool, seed: int = 0) -> None:
        super().__init__()
        self.steps = tuple(steps)
        self.jitter = jitter
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> tuple[PurifyStep, ...]:
        if not self.jitter:
            return self.steps
        return tuple(jittered(s, self.generator) for s in self.steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.steps:
            return x
        return torch.cat([Purifier(self.draw())(img.unsqueeze(0)) for img in x])


def _repeat(y: Any, n: int) -> Any:
    if n == 1 or y is None:
        return y
    if not isinstance(y, torch.Tensor):
        raise TypeError("EOT needs tensor labels (classifier or embedding targets)")
    return y.repeat(n, *([1] * (y.dim() - 1)))


class EOTTarget(Target):
    """A target seen through a (random) purifier: the loss is the mean over `samples` draws, so
    its gradient is the EOT gradient; a sample is adversarial when most draws are."""

    def __init__(self, base: Target, purifier: RandomPurifier, samples: int = 1) -> None:
        super().__init__(base.model)
        if samples < 1:
            raise ValueError("eot_samples must be at least 1")
        self.base = base
        self.purifier = purifier
        self.samples = samples

    def prepare(self, x: torch.Tensor, y: Any) -> Any:
        # labels describe the clean input (e.g. the undefended model's clean prediction)
        return self.base.prepare(x, y)

    def loss_and_success(self, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, b = self.samples, x.shape[0]
        views = self.purifier(x.repeat(n, 1, 1, 1) if n > 1 else x)
        loss, success = self.base.loss_and_success(views, _repeat(y, n))
        loss = loss.view(n, b).mean(0)
        if success is not None:
            success = success.view(n, b).float().mean(0) > 0.5
        return loss, success


def squeeze_scores(classifier: nn.Module, x: torch.Tensor, squeezers: Sequence[PurifyStep]) -> torch.Tensor:
    """Differentiable feature-squeezing scores (B, S): L1 between the softmax of the image and of
    each squeezed copy, the squeezers taken straight through (BPDA). The forward value equals
    `SqueezeDetector.scores` on the same 224 px image."""
    views = [x] + [Purifier((s,))(x) for s in squeezers]
    probs = classifier(torch.cat(views)).float().softmax(-1).view(len(views), x.shape[0], -1)
    return (probs[1:] - probs[:1]).abs().sum(-1).T


class DetectorAwareTarget(Target):
    """Fool `base` and stay under the squeeze detector's threshold.

    loss = base loss - weight * sum_s relu(score_s - (threshold - margin)); success = base
    success and max_s score_s <= threshold (a flagged image is caught, not a win).
    """

    def __init__(
        self,
        base: Target,
        classifier: nn.Module,
        squeezers: Sequence[PurifyStep],
        *,
        threshold: float,
        weight: float,
        margin: float,
    ) -> None:
        super().__init__(base.model)
        self.base = base
        self.classifier = classifier
        self.squeezers = tuple(squeezers)
        self.threshold, self.weight, self.margin = threshold, weight, margin

    def prepare(self, x: torch.Tensor, y: Any) -> Any:
        return self.base.prepare(x, y)

    def loss_and_success(self, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        loss, success = self.base.loss_and_success(x, y)
        scores = squeeze_scores(self.classifier, x, self.squeezers)
        penalty = torch.relu(scores - (self.threshold - self.margin)).sum(-1)
        hidden = scores.detach().amax(-1) <= self.threshold
        return loss - self.weight * penalty, None if success is None else success & hidden


def classifier_of(target: Target) -> nn.Module:
    """The logits network behind a target (what the squeeze detector scores with): the target's
    model for a classifier target, the wrapped network for a features wrapper (`.model`)."""
    if isinstance(target, ClassifierTarget):
        return target.model
    inner = getattr(target.model, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    raise TypeError("pass `classifier=`: cannot find the logits model behind this target")


class PGDBPDA(PGD):
    """PGD through the purifier with straight-through gradients (BPDA), no randomisation."""

    name = "pgd_bpda"
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {**PGD.presets["normal"], "eot_samples": 1, "jitter": False},
        "strong": {**PGD.presets["strong"], "eot_samples": 1, "jitter": False},
        "mat": {**PGD.presets["mat"], "eot_samples": 1, "jitter": False},
    }

    def __init__(
        self,
        target: Target,
        *,
        purify: Sequence[PurifyStep | dict[str, Any]] | None = None,
        eot_samples: int = 1,
        jitter: bool = False,
        **pgd: Any,
    ) -> None:
        steps = parse_steps(purify)
        self.purify = [s.model_dump() for s in steps]  # JSON-friendly for `params`
        self.eot_samples, self.jitter = eot_samples, jitter
        self._purifier = RandomPurifier(steps, jitter=jitter)
        # nothing random to average over without steps or jitter: one draw is the exact gradient
        draws = eot_samples if steps and jitter else 1
        super().__init__(self.wrap(EOTTarget(target, self._purifier, draws), target), **pgd)

    def wrap(self, adaptive: Target, original: Target) -> Target:
        """Hook for subclasses that add terms to the loss (the detector-aware attack)."""
        return adaptive

    def perturb(self, x: torch.Tensor, y: Any, generator: torch.Generator) -> torch.Tensor:
        # the EOT draws follow the attack's seed, so a fixed seed reproduces the attack exactly
        self._purifier.generator.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        return super().perturb(x, y, generator)


class PGDEOT(PGDBPDA):
    """PGD through the purifier, the loss averaged over `eot_samples` jittered purifiers (EOT
    with BPDA): JPEG quality within +-20 and resample scale within +-0.2 of the configured value."""

    name = "pgd_eot"
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {**PGD.presets["normal"], "eot_samples": 4, "jitter": True},
        "strong": {**PGD.presets["strong"], "eot_samples": 8, "jitter": True},
        "mat": {**PGD.presets["mat"], "eot_samples": 4, "jitter": True},
    }


class PGDDetectorAware(PGDBPDA):
    """`pgd_eot` that also keeps the feature-squeezing score under the detector's threshold.

    `purify: []` attacks a pipeline that only detects (the image reaches the model as is when not
    flagged); the default purifier attacks the detect-then-purify route.
    """

    name = "pgd_detector_aware"
    presets = {  # noqa: RUF012 - read-only class data
        "normal": {**PGDEOT.presets["normal"], "purify": []},
        "strong": {**PGDEOT.presets["strong"], "purify": []},
        "mat": {**PGDEOT.presets["mat"], "purify": []},
    }

    def __init__(
        self,
        target: Target,
        *,
        squeezers: Sequence[PurifyStep | dict[str, Any]] | None = None,
        threshold: float = DetectorConfig().threshold,
        detector_weight: float = 10.0,
        detector_margin: float = 0.2,
        classifier: nn.Module | str | None = None,
        **kwargs: Any,
    ) -> None:
        sq = tuple(DetectorConfig().squeezers) if squeezers is None else parse_steps(squeezers)
        self.squeezers = [s.model_dump() for s in sq]
        self.threshold, self.detector_weight, self.detector_margin = (
            threshold,
            detector_weight,
            detector_margin,
        )
        # a config name (`defence.detector.model`, JSON-friendly in eval configs), a checkpoint
        # of fine-tuned weights (`defence.detector.image_weights`) or a network
        self.classifier_name = classifier if isinstance(classifier, str) else None
        if isinstance(classifier, str):
            classifier = _classifier_network(classifier)
        self.classifier = classifier
        self._squeezer_steps = sq
        super().__init__(target, **kwargs)

    def wrap(self, adaptive: Target, original: Target) -> Target:
        return DetectorAwareTarget(
            adaptive,
            self.classifier if self.classifier is not None else classifier_of(original),
            self._squeezer_steps,
            threshold=self.threshold,
            weight=self.detector_weight,
            margin=self.detector_margin,
        )

    @property
    def params(self) -> dict[str, Any]:
        out = super().params
        if self.classifier_name is not None:
            out["classifier"] = self.classifier_name
        else:
            out["classifier"] = None if self.classifier is None else type(self.classifier).__name__
        return out


ADAPTIVE = (PGDBPDA, PGDEOT, PGDDetectorAware)


def _classifier_network(name: str) -> nn.Module:
    """The detector's network a detector-aware attack differentiates: a network's config name, or
    the path of a fine-tuned checkpoint of one."""
    from retlink.tools.vision.efficientnet import shared_network
    from retlink.tools.vision.weights import shared_tuned

    try:
        return shared_network(name)
    except ValueError as e:
        if Path(name).expanduser().is_file():
            return shared_tuned(Path(name).expanduser())
        raise ValueError(f"pgd_detector_aware classifier: {e} (nor is it a weights file)") from None


def adaptive_attacks(
    cfg: DefenceConfig, eot_samples: int, network: str = DEFAULT_NETWORK, weights: str | Path | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The adaptive attacks (name, overrides) an attacker who knows the defence config `cfg`
    runs against a pipeline whose attacked network is `network` (what `attack: adaptive` in an
    eval config expands to, per pipeline, beside plain PGD):

    - purification always on: EOT+BPDA through it;
    - detector on: a detector-aware attack through what an unflagged image meets (the configured
      purifier, or nothing), keeping the squeeze score under the detector's own threshold on its
      own network (`classifier`, named only when it is not `network` with `weights`, the attack's
      surrogate: a tuned detector is named by its checkpoint), and EOT+BPDA through the
      flagged route's purifier (the attacker who accepts being flagged and survives it);
    - no defence: plain PGD is already adaptive (nothing to adapt to), so none is added.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    always = [s.model_dump() for s in cfg.purify]
    if cfg.detector.enabled:
        det: dict[str, Any] = {
            "squeezers": [s.model_dump() for s in cfg.detector.squeezers],
            "threshold": cfg.detector.threshold,
        }
        same_weights = (cfg.detector.image_weights is None and weights is None) or (
            cfg.detector.image_weights is not None
            and weights is not None
            and Path(cfg.detector.image_weights).expanduser().resolve() == Path(weights).expanduser().resolve()
        )
        if cfg.detector.image_weights is not None and not same_weights:
            det["classifier"] = str(cfg.detector.image_weights)
        elif cfg.detector.model != network or not same_weights:
            det["classifier"] = cfg.detector.model
        out.append(("pgd_detector_aware", {"purify": always, "eot_samples": eot_samples, **det}))
        flagged = always or [s.model_dump() for s in cfg.purify_when_flagged]
        if flagged:
            out.append(("pgd_eot", {"purify": flagged, "eot_samples": eot_samples}))
    elif always:
        out.append(("pgd_eot", {"purify": always, "eot_samples": eot_samples}))
    return out


def attack_key(name: str, overrides: dict[str, Any]) -> str:
    """A short stable, file-name-safe key, so two pipelines whose defences need the same attack
    share its images."""
    import hashlib
    import json

    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:6]
    return f"{name}-{digest}" if overrides else name
