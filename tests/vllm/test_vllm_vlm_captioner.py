"""The VLM captioner against real vLLM serving a tiny random LLaVA built here from a config.

The model's words are noise (random weights); what is checked is the protocol path: the image
travels as an `image_url` data URI and reaches the vision tower (the prompt grows by the image's
tokens), and the backend turns the reply into a Caption.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from PIL import Image

from retlink.tools.llm.openai_client import OpenAICompatClient
from retlink.tools.vision.openai_vlm import OpenAIVLMCaptioner, image_data_uri

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

IMAGE_TOKENS = (56 // 14) ** 2 + 1  # 4x4 patches + the class token (num_additional_image_tokens=1)


def test_captioner_sends_the_image_and_returns_a_caption(tiny_llava):
    from skimage import data

    cap = OpenAIVLMCaptioner(OpenAICompatClient("tiny-llava", tiny_llava.base_url), max_tokens=12)
    caption = cap.caption(Image.fromarray(data.chelsea()))
    assert caption.backend == "openai_vlm" and isinstance(caption.text, str)
    assert 0.0 < caption.confidence <= 1.0


def test_image_reaches_the_vision_tower(tiny_llava):
    client = openai.OpenAI(base_url=tiny_llava.base_url, api_key="x", max_retries=0)
    image = image_data_uri(Image.new("RGB", (80, 60), "red"))
    text = {"type": "text", "text": "What is this?"}
    with_image = client.chat.completions.create(model="tiny-llava", max_tokens=2, messages=[
        {"role": "user", "content": [text, {"type": "image_url", "image_url": {"url": image}}]}])
    without = client.chat.completions.create(model="tiny-llava", max_tokens=2, messages=[
        {"role": "user", "content": [text]}])
    assert with_image.usage.prompt_tokens - without.usage.prompt_tokens >= IMAGE_TOKENS


def test_wrong_model_name_is_a_clear_error(tiny_llava):
    from retlink.core.errors import BackendError

    captioner = OpenAIVLMCaptioner(OpenAICompatClient("llava-13b", tiny_llava.base_url))
    with pytest.raises(BackendError, match="it serves: tiny-llava"):
        captioner.caption(Image.new("RGB", (32, 32)))


def test_script_builds_vllm_layout(tiny_llava, tmp_path: Path):
    """The saved weights use vLLM's key layout (the rename the recipe needs)."""
    from safetensors import safe_open

    model_dir = Path(tiny_llava.env["VLLM_MODEL_DIR"])
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    vision = [k for k in keys if "vision_tower." in k]
    assert vision and all("vision_tower.vision_model." in k for k in vision)
