"""Perturbation detection by feature squeezing (Xu, Evans and Qi, NDSS 2018).

An adversarial perturbation is tuned to the exact pixels; squeezing the image (fewer bits,
a median filter, a JPEG pass) moves the model's prediction far more for an attacked image
than for a clean one. The score is the largest L1 distance between the softmax of the image
and of each squeezed copy; above a threshold the image is flagged.
"""

from __future__ import annotations

import torch
from PIL import Image

from retlink.core.schema import PurifyStep
from retlink.tools.vision.efficientnet import EfficientNetLite, network_name, preprocess
from retlink.tools.vision.purify import purify_pil
from retlink.tools.vision.weights import short_id


class SqueezeDetector:
    """Scores how much squeezing moves the classifier's prediction (0 = not at all, 2 = fully)."""

    def __init__(self, model: EfficientNetLite, squeezers: list[PurifyStep] | tuple[PurifyStep, ...]) -> None:
        self.model = model
        #: the network's config name ("efficientnet_lite0", "efficientnet_lite1"; with "@<short
        #: hash>" for fine-tuned weights), for traces
        sha = getattr(model, "weights_sha256", None)
        self.network = network_name(model) + (f"@{short_id(sha)}" if sha else "")
        self.squeezers = tuple(squeezers)

    @torch.inference_mode()
    def scores(self, image: Image.Image) -> dict[str, float]:
        """L1 distance between the prediction on the image and on each squeezed copy."""
        views = [image] + [purify_pil(image, (s,)) for s in self.squeezers]
        probs = self.model(torch.stack([preprocess(v) for v in views])).softmax(-1)
        dist = (probs[1:] - probs[:1]).abs().sum(-1)
        return {s.label(): round(float(d), 4) for s, d in zip(self.squeezers, dist, strict=True)}

    def score(self, image: Image.Image) -> float:
        return max(self.scores(image).values())
