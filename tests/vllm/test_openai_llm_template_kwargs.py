"""`LLMConfig.chat_template_kwargs` reaches the wire on answer requests only.

What is checked is the request body the backend sends, so the server is a fake:
`FakeChatServer`, routes on a real HTTP server on 127.0.0.1 (`tests.loopback`) that speak the
OpenAI chat protocol, record every request body and answer with canned messages (a chain of
thought, then a constrained JSON answer). Whether a real Qwen3 template honours
`enable_thinking` is vLLM's business; this needs no vLLM venv.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from retlink.agent.backends import shared_llm
from retlink.core.schema import LLMConfig
from retlink.tools.llm.openai_client import OpenAICompatClient
from retlink.tools.llm.openai_llm import OpenAILLM
from tests.loopback import LoopbackHTTP
from tests.vllm.fake_chat_server import MESSAGES, MODEL, FakeChatServer

NO_THINKING = {"enable_thinking": False}


@pytest.fixture
def fake() -> Iterator[LoopbackHTTP]:
    with LoopbackHTTP(FakeChatServer) as srv:
        yield srv


def base_url(srv: LoopbackHTTP) -> str:
    return srv.url("/v1")


def client(srv: LoopbackHTTP) -> OpenAICompatClient:
    return OpenAICompatClient(MODEL, base_url(srv), max_retries=0)


def test_choose_sends_template_kwargs_on_the_answer_step_only(fake):
    llm = OpenAILLM(client(fake), chat_template_kwargs=NO_THINKING)
    choice = llm.choose(MESSAGES, ["Q1", "NIL"], max_reasoning_tokens=16)
    assert choice.option == "Q1" and choice.reasoning.startswith("The image shows a rocket")
    think, answer = fake.bodies
    assert "chat_template_kwargs" not in think  # the chain of thought is where thinking is wanted
    assert answer["chat_template_kwargs"] == NO_THINKING
    assert answer["structured_outputs"]["json"]["properties"]["answer"]["enum"] == ["Q1", "NIL"]


def test_generate_sends_template_kwargs_beside_its_own_extra_body(fake):
    llm = OpenAILLM(client(fake), chat_template_kwargs=NO_THINKING)
    llm.generate(MESSAGES, max_tokens=32, stop_at_sentence=True)
    llm.generate(MESSAGES, max_tokens=32)
    with_stop, plain = fake.bodies
    assert with_stop["chat_template_kwargs"] == NO_THINKING and with_stop["include_stop_str_in_output"] is True
    assert plain["chat_template_kwargs"] == NO_THINKING and "include_stop_str_in_output" not in plain


def test_config_reaches_the_backend_and_stays_hashable(fake):
    """`shared_llm` caches backends by config, so the dict field must not break hashing."""
    cfg = LLMConfig(backend="openai", model=MODEL, base_url=base_url(fake), max_retries=0,
                    chat_template_kwargs={"enable_thinking": False})
    llm = shared_llm(cfg)
    assert llm is shared_llm(cfg.model_copy())  # equal configs, one backend
    llm.generate(MESSAGES, max_tokens=8)
    assert fake.bodies[-1]["chat_template_kwargs"] == NO_THINKING


def test_without_the_option_nothing_extra_is_sent(fake):
    OpenAILLM(client(fake)).generate(MESSAGES, max_tokens=8)
    assert "chat_template_kwargs" not in fake.bodies[-1] and "extra_body" not in fake.bodies[-1]
