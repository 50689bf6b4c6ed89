"""Real embedders, loaded once per session (MiniLM and EfficientNet-Lite0 from PyPI packages).

The image embedder is wrapped in a per-session memo keyed by the pixels: several tests build the
same demo KB and embed the same query photos, and on 2 shared cores EfficientNet is the slow part.
The vectors are the real model's; only repeated work is skipped.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder


class MemoImageEmbedder:
    """The real image embedder, computing each distinct image once."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self._memo: dict[str, np.ndarray] = {}

    def embed_images(self, images):
        keys = [hashlib.sha1(im.tobytes() + repr(im.size).encode()).hexdigest() for im in images]
        todo = {k: im for k, im in zip(keys, images, strict=True) if k not in self._memo}
        if todo:
            for k, v in zip(todo, self.inner.embed_images(list(todo.values())), strict=True):
                self._memo[k] = v
        return np.stack([self._memo[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)


@pytest.fixture(scope="session")
def text_embedder():
    return shared_text_embedder()


@pytest.fixture(scope="session")
def image_embedder():
    return MemoImageEmbedder(shared_image_embedder("efficientnet"))
