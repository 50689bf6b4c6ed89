"""Real embedders, loaded once per session (MiniLM and EfficientNet-Lite0 from PyPI packages)."""

from __future__ import annotations

import pytest
from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder


@pytest.fixture(scope="session")
def text_embedder():
    return shared_text_embedder()


@pytest.fixture(scope="session")
def image_embedder():
    return shared_image_embedder("efficientnet")
