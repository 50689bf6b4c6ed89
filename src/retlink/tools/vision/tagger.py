"""The embedded default captioner: an EfficientNet-Lite's top-k ImageNet labels as a caption.

A tagger is no VLM, but it is real, offline and fast, and its labels ("tabby cat", "space
shuttle") are exactly the kind of visual hint that disambiguates a mention. The network is
EfficientNet-Lite0 by default, or Lite1 (`captioner.vision_model`), with its packaged weights or
fine-tuned ones (`captioner.image_weights`); each caption names it (`Caption.model`, with the
weights' short hash when tuned), so a trace shows which one captioned the image.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from retlink.core.networks import DEFAULT_NETWORK
from retlink.core.types import Caption
from retlink.tools.vision.efficientnet import imagenet_labels, preprocess
from retlink.tools.vision.weights import network_with_weights, weights_id


class ImageNetTagger:
    """Captioner backed by a shared network of `retlink.core.networks`."""

    name = "efficientnet_tagger"

    def __init__(
        self, top_k: int = 5, device: str = "cpu", network: str = DEFAULT_NETWORK, weights: str | Path | None = None
    ) -> None:
        self.top_k = top_k
        self.device = device
        self.model = network_with_weights(network, weights, device)
        self.network = weights_id(str(network), weights)
        self.labels = imagenet_labels()

    @torch.inference_mode()
    def tag(self, image: Image.Image) -> list[tuple[str, float]]:
        """Top-k (label, probability) pairs."""
        x = preprocess(image).unsqueeze(0).to(self.device)
        probs = self.model(x).softmax(-1)[0]
        top = probs.topk(self.top_k)
        return [(self.labels[i], round(float(p), 4)) for p, i in zip(top.values, top.indices, strict=True)]

    def caption(self, image: Image.Image) -> Caption:
        labels = self.tag(image)
        shown = [f"{label} ({p:.0%})" for label, p in labels if p >= 0.02] or [
            f"{labels[0][0]} ({labels[0][1]:.0%})"
        ]
        return Caption(
            text="A photo that shows: " + ", ".join(shown) + ".",
            labels=labels,
            confidence=labels[0][1],
            backend=self.name,
            model=self.network,
        )
