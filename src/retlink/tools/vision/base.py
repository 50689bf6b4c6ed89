"""The captioner role: image in, a short description (and labels with scores) out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from PIL import Image

from retlink.core.types import Caption


@runtime_checkable
class Captioner(Protocol):
    """Describes what is in an image. Backends: ImageNet tagger, OpenAI-compatible VLM."""

    name: str

    def caption(self, image: Image.Image) -> Caption: ...
