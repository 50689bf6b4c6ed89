"""Captioner backed by a vision-language model behind an OpenAI-compatible server (vLLM).

The image travels inside the request as an `image_url` content part holding a data URI, so the
server needs no access to our files or network. The caption's confidence is the geometric mean
of its token probabilities when the server returns logprobs: a VLM that is unsure of what it
sees spreads its probability, and the graph widens its search when the caption is unsure.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from PIL import Image

from retlink.core.types import Caption
from retlink.tools.llm.base import split_think
from retlink.tools.llm.openai_client import OpenAICompatClient

DEFAULT_PROMPT = "Describe the main subject of this image in one short sentence. Name it if you recognise it."


def image_data_uri(image: Image.Image, *, max_side: int = 1024, quality: int = 90) -> str:
    """JPEG data URI of the image, downscaled so that its longer side is at most `max_side`."""
    img = image.convert("RGB")
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIVLMCaptioner:
    """`Captioner` that asks a served VLM to describe the image."""

    name = "openai_vlm"

    def __init__(
        self,
        client: OpenAICompatClient,
        *,
        max_tokens: int = 96,
        prompt: str = DEFAULT_PROMPT,
        max_side: int = 1024,
    ) -> None:
        """`client` carries the connection (model, base_url, timeouts, retries, concurrency)."""
        self.client = client
        self.model = client.model
        self.max_tokens = max_tokens
        self.prompt = prompt
        self.max_side = max_side

    @classmethod
    def from_config(cls, cfg: Any) -> OpenAIVLMCaptioner:
        """Build from `retlink.core.schema.CaptionerConfig` (backend "openai_vlm")."""
        return cls(OpenAICompatClient.from_config(cfg), max_tokens=cfg.max_tokens)

    def caption(self, image: Image.Image) -> Caption:
        self.client.check()
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": self.prompt},
                    {
                        "type": "image_url",
                        "image_url": {"url": image_data_uri(image, max_side=self.max_side)},
                    },
                ],
            }
        ]
        choice = self.client.chat(
            messages, max_tokens=self.max_tokens, temperature=0.0, logprobs=True
        ).choices[0]
        _, text = split_think(choice.message.content or "")
        return Caption(
            text=text,
            labels=[],
            confidence=_mean_token_probability(choice.logprobs),
            backend=self.name,
            model=str(self.model or ""),
        )


def _mean_token_probability(logprobs: Any) -> float:
    """Geometric mean of the generated tokens' probabilities; 0.5 (undecided) without logprobs."""
    tokens = getattr(logprobs, "content", None) or []
    if not tokens:
        return 0.5
    return round(math.exp(sum(t.logprob for t in tokens) / len(tokens)), 4)
