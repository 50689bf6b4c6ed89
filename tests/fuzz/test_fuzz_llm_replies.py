"""Fuzz what comes back from a served LLM: the answer parsers on any text and token
log-probabilities, and the OpenAI-compatible client on any HTTP reply of a real loopback server
(missing or empty `choices`, a null message, content that is no string, malformed or absurd
logprobs, non-JSON bodies, error statuses). The property: a `Generation` / `Choice` whose
probabilities are finite and sum to 1, or a `BackendError`; never another exception.
"""

from __future__ import annotations

import json
import math
import threading
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retlink.core.errors import RetlinkError
from retlink.tools.llm.base import split_think
from retlink.tools.llm.openai_client import OpenAICompatClient
from retlink.tools.llm.openai_llm import OpenAILLM, option_probabilities, parse_answer
from tests.loopback import LoopbackHTTP, QuietHandler

OPTIONS = ["Q1", "Q12", "Q2", "NIL", "a-b"]
option_texts = st.sampled_from(OPTIONS) | st.text(max_size=5)
raw_answers = st.one_of(
    st.text(max_size=60),
    st.builds(lambda o, pre, post: f'{pre}{{"answer": {json.dumps(o)}}}{post}', option_texts,
              st.sampled_from(["", "<think>hm</think>", "</think>", "<think>"]), st.sampled_from(["", "}", " x"])),
    st.builds(json.dumps, st.recursive(st.none() | st.integers() | st.text(max_size=5),
                                       lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=6), i, max_size=3))),
    st.integers(1, 5000).map(lambda n: "[" * n),  # nesting deep enough to break a recursive parser
)
logprob_values = st.one_of(st.floats(max_value=0, allow_nan=False, allow_infinity=False),
                           st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, 5.0]))
token = st.fixed_dictionaries(
    {"token": st.sampled_from(['{"', 'answer', '":', ' "', 'Q', '1', '12', '2', '"}', 'NIL', '"']) | st.text(max_size=4),
     "logprob": logprob_values},
    optional={"top_logprobs": st.lists(st.fixed_dictionaries({"token": st.text(max_size=4), "logprob": logprob_values}), max_size=3)},
)


def as_objects(value):
    """JSON dicts -> attribute objects, as the openai SDK hands them to the parsers."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: as_objects(v) for k, v in value.items()})
    if isinstance(value, list):
        return [as_objects(v) for v in value]
    return value


def check_probabilities(probs: dict[str, float]) -> None:
    assert set(probs) == set(OPTIONS)
    assert all(math.isfinite(p) and p >= 0 for p in probs.values())
    assert abs(sum(probs.values()) - 1) < 1e-3


@given(raw_answers)
def test_answer_parsers(raw):
    reasoning, answer = split_think(raw)
    assert isinstance(reasoning, str) and isinstance(answer, str)
    assert parse_answer(raw, OPTIONS) in (None, *OPTIONS)


@given(raw=raw_answers, option=st.sampled_from(OPTIONS), tokens=st.lists(token, max_size=12) | st.none())
def test_option_probabilities(raw, option, tokens):
    logprobs = None if tokens is None else as_objects({"content": tokens})
    probs, settled = option_probabilities(raw, option, OPTIONS, logprobs)
    check_probabilities(probs)
    assert settled <= set(OPTIONS)


class Reply(QuietHandler):
    """Serves /v1/models properly and whatever the test set as the chat completion reply."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_body(200, "application/json", json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode())

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, body = self.server.reply
        self.send_body(status, "application/json", body)


def completion(message, logprobs=None, **extra):
    choice = {"index": 0, "finish_reason": "stop", "message": message}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice], **extra}


replies = st.one_of(
    st.builds(lambda raw, toks: (200, completion({"role": "assistant", "content": raw},
                                                 None if toks is None else {"content": toks})),
              raw_answers, st.lists(token, max_size=8) | st.none()),
    st.sampled_from([
        (200, {"id": "x", "choices": []}),
        (200, {"id": "x"}),
        (200, {"choices": None}),
        (200, {"choices": [None]}),
        (200, {"choices": [{"message": None}]}),
        (200, {"choices": [{}]}),
        (200, completion({"role": "assistant", "content": {"answer": "Q1"}})),
        (200, completion({"role": "assistant", "content": ["Q1"]})),
        (200, completion({"role": "assistant", "content": None, "reasoning": {"x": 1}})),
        (200, completion({"role": "assistant", "content": "x"}, logprobs={"content": ["Q1"]})),
        (200, completion({"role": "assistant", "content": "x"}, logprobs="yes")),
        (200, []), (200, "text"), (200, None),
        (400, {"error": {"message": "bad"}}), (404, {}), (429, {}), (500, {}), (503, "down"),
    ]),
).map(lambda r: (r[0], json.dumps(r[1]).encode())) | st.builds(lambda b: (200, b), st.binary(max_size=64))


@pytest.fixture(scope="module")
def server():
    with LoopbackHTTP(Reply) as srv:
        srv.reply = (200, b"{}")
        srv.lock_reply = threading.Lock()
        yield srv


@settings(max_examples=max(40, settings.default.max_examples // 10))  # each one two HTTP requests
@given(reply=replies, reply2=replies)
def test_client_on_any_reply(server, reply, reply2):
    llm = OpenAILLM(OpenAICompatClient("m", server.url("/v1"), max_retries=0, timeout_s=10), structured_output=False)
    server.reply = reply
    try:
        gen = llm.generate([{"role": "user", "content": "hi"}], max_tokens=8)
        assert isinstance(gen.text, str) and isinstance(gen.reasoning, str)
    except RetlinkError:
        pass
    server.reply = reply2  # choose() asks twice (think, then answer): the same reply both times
    try:
        choice = llm.choose([{"role": "user", "content": "hi"}], OPTIONS, max_reasoning_tokens=0)
        assert choice.option in (None, *OPTIONS)
        if choice.option is not None:
            check_probabilities(choice.probabilities)
    except RetlinkError:
        pass
