"""Fuzz the chat endpoint's request parsing: bodies of every shape, messages with or without
brackets, data URIs with any media type, parameters and (mangled) payloads.

Two levels: the parsing functions themselves (many examples, in-process), and a real uvicorn
server on loopback taking raw bodies (fewer examples) whose answer must be 2xx or 4xx with
OpenAI's error JSON, never a 500 or a dropped connection. The server's linker is an injected
stand-in (it answers NIL without models): what is fuzzed is everything before the link.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from retlink.agent.config import load_config
from retlink.core.errors import RetlinkError
from retlink.core.schema import LimitsConfig
from retlink.core.types import LinkResult
from retlink.serve.app import ServerSettings, create_app
from retlink.serve.inputs import decode_data_uri, parse_request
from retlink.serve.protocol import ChatCompletionRequest
from retlink.tools.images import load_image
from tests.fuzz.image_strategies import mangled
from tests.server.conftest import ServerThread

LIMITS = LimitsConfig(max_mention_chars=64, max_context_chars=512)

texts = st.one_of(
    st.text(max_size=80),
    st.builds(lambda a, m, b: f"{a}[{m}]{b}", st.text(max_size=30), st.text(max_size=80), st.text(max_size=600)),
    st.sampled_from(["[]", "[ ]", "[[x]]", "[a][b]", "]x[", "[x", "[" * 50 + "x" + "]" * 50]),
)

data_uris = st.one_of(
    st.builds(
        lambda mime, params, b64, payload: f"data:{mime}{params}{b64},{payload}",
        st.sampled_from(["image/png", "image/jpeg", "", "text/html", "image/", "application/json"]),
        st.sampled_from(["", ";charset=utf-8", ";x=1;y=2"]),
        st.sampled_from([";base64", ""]),
        st.one_of(mangled().map(lambda b: base64.b64encode(b).decode()), st.text(max_size=40)),
    ),
    st.text(max_size=40),
    st.sampled_from(["http://", "https://[::1", "ftp://x/y.png", "file:///etc/passwd", "data:", "data:,"]),
)

parts = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, texts),
    st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}}, data_uris),
    st.builds(lambda t: {"type": t}, st.text(max_size=10)),
    st.dictionaries(st.text(max_size=6), st.none() | st.integers() | st.text(max_size=6), max_size=3),
)

messages = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["user", "system", "assistant", "tool", "", "USER"]),
    st.one_of(st.none(), texts, st.lists(parts, max_size=4)),
)

bodies = st.one_of(
    st.fixed_dictionaries(
        {"messages": st.lists(messages, max_size=3)},
        optional={
            "model": st.none() | st.text(max_size=10),
            "stream": st.booleans() | st.integers() | st.text(max_size=4),
            "stream_options": st.none() | st.dictionaries(st.text(max_size=8), st.booleans(), max_size=2),
        },
    ),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                 max_leaves=6),
)


@given(bodies)
def test_parsing_gives_inputs_or_a_typed_error(body):
    try:
        req = ChatCompletionRequest.model_validate(body)  # the endpoint answers 400 for these
    except ValidationError:
        return
    try:
        inputs = parse_request(req, LIMITS)
        assert inputs.mention.strip() and len(inputs.mention) <= LIMITS.max_mention_chars
        assert len(inputs.context) <= LIMITS.max_context_chars
        if inputs.image_source is not None and inputs.image_source.startswith("data:"):
            image = load_image(decode_data_uri(inputs.image_source, 1 << 20), max_pixels=1_000_000, max_bytes=1 << 20)
            assert image.mode == "RGB"
    except RetlinkError as e:
        assert 400 <= e.http_status < 500


class NilLinker:
    """Injected stand-in for the models: answers NIL at once, so the fuzz exercises the endpoint."""

    config = load_config({"limits": LIMITS.model_dump()})

    async def alink(self, image, mention, context=None):
        return LinkResult(entity=None, score=0.0, decided_by="nil", mention=mention)

    async def astream(self, image, mention, context=None):
        yield "result", await self.alink(image, mention, context)


@pytest.fixture(scope="module")
def server():
    with ServerThread(create_app(NilLinker(), ServerSettings(max_body_bytes=64 * 1024))) as srv:
        yield srv


raw_bodies = st.one_of(
    bodies.map(lambda b: json.dumps(b).encode()),
    st.binary(max_size=200),
    bodies.map(lambda b: json.dumps(b).encode()[: max(0, len(json.dumps(b)) - 3)]),
)


@settings(max_examples=max(25, settings.default.max_examples // 20))  # each one a real HTTP request
@given(body=raw_bodies, content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_server_answers_4xx_never_5xx(server, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(f"{server.url}/v1/chat/completions", content=body, headers=headers, timeout=60)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.json()["error"]["message"]
