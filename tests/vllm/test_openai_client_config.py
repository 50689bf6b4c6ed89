"""One place builds the connection: `OpenAICompatClient.from_config` reads a role's config, and
`OpenAILLM` / `OpenAIVLMCaptioner` are handed the built client. No server is contacted except the
fake one (`FakeChatServer`, a loopback HTTP server), so this needs no vLLM venv.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from retlink.backends import shared_captioner, shared_llm
from retlink.config import CaptionerConfig, LLMConfig
from retlink.errors import BackendError
from retlink.tools.llm.openai_client import OpenAICompatClient
from retlink.tools.llm.openai_llm import OpenAILLM
from retlink.tools.vision.openai_vlm import OpenAIVLMCaptioner
from tests.loopback import LoopbackHTTP
from tests.vllm.test_openai_llm_template_kwargs import MODEL, FakeChatServer

URL = "http://127.0.0.1:8011/v1"


@pytest.fixture
def fake() -> Iterator[LoopbackHTTP]:
    with LoopbackHTTP(FakeChatServer) as srv:
        yield srv


def test_llm_config_sets_every_connection_setting():
    cfg = LLMConfig(
        backend="openai",
        model="m",
        base_url=URL + "/",
        api_key="k",
        timeout_s=7,
        max_retries=5,
        max_concurrency=3,
    )
    client = OpenAICompatClient.from_config(cfg)
    assert (client.model, client.base_url, client.max_retries) == ("m", URL, 5)
    assert client._client.timeout == 7 and client._client.api_key == "k"
    assert client._slots._initial_value == 3


def test_captioner_config_keeps_the_client_defaults_it_does_not_declare():
    cfg = CaptionerConfig(backend="openai_vlm", model="vlm", base_url=URL, timeout_s=9)
    client = OpenAICompatClient.from_config(cfg)
    default = OpenAICompatClient("vlm", URL)
    assert client._client.timeout == 9 and client._client.api_key == "EMPTY"
    assert client.max_retries == default.max_retries
    assert client._slots._initial_value == default._slots._initial_value


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (LLMConfig(backend="openai", model="m"), r"model 'm': the openai backend needs base_url"),
        (CaptionerConfig(backend="openai_vlm", base_url=URL), "the openai backend needs model"),
    ],
)
def test_missing_connection_fields_are_clear_errors(cfg, message):
    with pytest.raises(BackendError, match=message):
        OpenAICompatClient.from_config(cfg)


def test_backends_build_their_client_from_their_config(fake):
    url = fake.url("/v1")
    llm = shared_llm(LLMConfig(backend="openai", model=MODEL, base_url=url, max_retries=0, temperature=0.5))
    assert isinstance(llm, OpenAILLM) and llm.name == MODEL and llm.temperature == 0.5
    assert llm.client.max_retries == 0
    captioner = shared_captioner(
        CaptionerConfig(backend="openai_vlm", model=MODEL, base_url=url, max_tokens=7)
    )
    assert isinstance(captioner, OpenAIVLMCaptioner) and captioner.model == MODEL
    assert captioner.client is not llm.client
    caption = captioner.caption(Image.new("RGB", (32, 32), "red"))
    assert caption.text and caption.backend == "openai_vlm" and caption.confidence == 0.5
    assert fake.bodies[-1]["max_tokens"] == 7
    assert fake.bodies[-1]["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/jpeg")
