"""One place builds the connection: `OpenAICompatClient.from_config` reads a role's config, and
`OpenAILLM` / `OpenAIVLMCaptioner` are handed the built client. No server is contacted except the
fake one (`FakeChatServer`, a loopback HTTP server), so this needs no vLLM venv.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from retlink.agent.backends import shared_captioner, shared_llm
from retlink.agent.config import load_config
from retlink.core.errors import BackendError, ConfigError
from retlink.core.schema import CaptionerConfig, LLMConfig, OpenAIServerConfig
from retlink.tools.llm.openai_client import OpenAICompatClient
from retlink.tools.llm.openai_llm import OpenAILLM
from retlink.tools.vision.openai_vlm import OpenAIVLMCaptioner
from tests.loopback import LoopbackHTTP
from tests.vllm.fake_chat_server import MESSAGES, MODEL, FakeChatServer

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
    assert client.replicas[0].client.timeout == 7 and client.replicas[0].client.api_key == "k"
    assert client._slots._initial_value == 3


def test_captioner_config_sets_every_connection_setting_too():
    cfg = CaptionerConfig(
        backend="openai_vlm", model="vlm", base_url=URL, timeout_s=9, max_retries=0, max_concurrency=2
    )
    client = OpenAICompatClient.from_config(cfg)
    assert client.replicas[0].client.timeout == 9 and client.replicas[0].client.api_key == "EMPTY"
    assert (client.max_retries, client.max_concurrency, client._slots._initial_value) == (0, 2, 2)


@pytest.mark.parametrize("role", [LLMConfig, CaptionerConfig])
def test_roles_share_the_connection_fields_and_the_client_their_defaults(role):
    assert issubclass(role, OpenAIServerConfig)
    cfg = role(model="m", base_url=URL)
    client, default = OpenAICompatClient.from_config(cfg), OpenAICompatClient("m", URL)
    assert (cfg.timeout_s, cfg.max_retries, cfg.max_concurrency) == (60.0, 2, 8)  # unchanged defaults
    for c in (client, default):
        assert (c.replicas[0].client.timeout, c.max_retries, c.max_concurrency) == (60.0, 2, 8)


@pytest.mark.parametrize(
    ("field", "value"), [("timeout_s", 0), ("max_retries", -1), ("max_concurrency", 0), ("max_retrys", 1)]
)
def test_bad_connection_settings_are_config_errors_naming_the_key(field, value):
    with pytest.raises(ConfigError, match=rf"captioner\.{field}: "):
        load_config({"captioner": {"backend": "openai_vlm", field: value}})


def test_vllm_preset_connection_reaches_the_client():
    llm = load_config("vllm").reasoner.llm
    client = OpenAICompatClient.from_config(llm)
    assert (client.base_url, client.model) == ("http://127.0.0.1:8011/v1", "smollm2")
    assert (client.replicas[0].client.timeout, client.max_retries, client.max_concurrency) == (60, 2, 8)


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


class HeldChat(FakeChatServer):
    """The fake chat server, holding each answer until `expected` requests are in flight at once
    (or 20 s pass) and recording the most it held: the peak is reached however slowly a loaded
    machine sends the requests, and a client that allows more than `expected` still shows more."""

    def do_POST(self) -> None:
        srv = self.server
        with srv.changed:
            srv.in_flight += 1
            srv.peak = max(srv.peak, srv.in_flight)
            srv.changed.notify_all()
            srv.changed.wait_for(lambda: srv.peak >= srv.expected, timeout=20)
        time.sleep(0.05)
        # no longer in flight before the answer goes out: counted after it, the client's next
        # request could arrive while this handler still counts itself (a peak of 3 at 2)
        with srv.changed:
            srv.in_flight -= 1
        super().do_POST()


@pytest.mark.parametrize("max_concurrency", [2, 12])
def test_generate_batch_runs_as_many_requests_at_once_as_the_client_allows(max_concurrency):
    with LoopbackHTTP(HeldChat) as srv:
        srv.changed, srv.in_flight, srv.peak, srv.expected = threading.Condition(), 0, 0, max_concurrency
        llm = OpenAILLM(OpenAICompatClient(MODEL, srv.url("/v1"), max_retries=0, max_concurrency=max_concurrency))
        out = llm.generate_batch([MESSAGES] * 12, max_tokens=8)
        assert len(out) == 12 and all(g.text for g in out)
        assert srv.peak == max_concurrency  # 12 was capped at 8 threads before
