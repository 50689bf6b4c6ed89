"""The chat endpoint over loopback with the official openai client: answers, streaming, errors."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from PIL import Image

from retlink.serve.app import ServerSettings, create_app
from tests.server.conftest import API_KEY, DEMO, ServerThread, chat_client, data_uri, user_message
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

EXAMPLES = [json.loads(line) for line in (DEMO / "examples.jsonl").read_text().splitlines() if line.strip()]


def ask(client: openai.OpenAI, ex: dict, **kw):
    return client.chat.completions.create(
        model="retlink", messages=user_message(ex["context"], data_uri(DEMO / ex["image"])), **kw
    )


@pytest.fixture(scope="session")
def linked(linker) -> dict[str, object]:
    """What `Linker.link` returns for the first four demo examples: the endpoint must agree."""
    return {ex["id"]: linker.link(DEMO / ex["image"], ex["mention"], ex["context"]) for ex in EXAMPLES[:4]}


@pytest.fixture(scope="session")
def expected(linked) -> dict[str, str]:
    """The entity ids `Linker.link` answers for the first four demo examples."""
    return {key: result.entity_id for key, result in linked.items()}


def test_plain_completion_answers_like_the_linker(client, expected, linked):
    ex = EXAMPLES[0]
    resp = ask(client, ex)
    msg = resp.choices[0].message
    result = resp.model_extra["retlink"]
    assert resp.object == "chat.completion" and resp.choices[0].finish_reason == "stop"
    assert (result["entity"] or {}).get("id", "NIL") == expected[ex["id"]]
    assert result["mention"] == ex["mention"]
    assert msg.content.splitlines()[0].endswith(f"({expected[ex['id']]})")
    # the message's reasoning is the linker's own for this link, as vLLM's reasoning field carries
    # it (empty with the default: the shipped head decides and no reasoner runs)
    assert msg.model_extra.get("reasoning") == (linked[ex["id"]].reasoning or None)
    assert result["reasoning"] == linked[ex["id"]].reasoning


def test_streaming_sends_one_chunk_per_node_then_the_answer(client, expected):
    ex = EXAMPLES[1]
    stream = ask(client, ex, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    nodes = [c.model_extra["retlink_node"]["node"] for c in chunks if c.model_extra.get("retlink_node")]
    assert nodes[0] == "validate" and nodes[-1] == "finalize"
    # the default decides by the shipped head: rank and decide, no reasoner call
    assert {"caption", "retrieve", "rank", "decide"} <= set(nodes) and "reason" not in nodes
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning") or "" for c in chunks if c.choices)
    assert content.splitlines()[0].endswith(f"({expected[ex['id']]})")
    assert "[validate] done in" in reasoning
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finals) == 1 and finals[0].model_extra["retlink"]["mention"] == ex["mention"]
    assert chunks[-1].usage is not None and not chunks[-1].choices
    # progress arrives before the answer: every node chunk precedes the first content chunk
    first_content = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    last_node = max(i for i, c in enumerate(chunks) if c.model_extra.get("retlink_node"))
    assert last_node < first_content


def test_models_health_ready(client, server):
    assert [m.id for m in client.models.list().data] == ["retlink"]
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/ready").status_code == 200


@pytest.mark.timeout(1800)  # eight links at once: several minutes on 2 cores loaded by other jobs
def test_concurrent_requests_all_answered_correctly(client, expected):
    batch = [EXAMPLES[i % 4] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda ex: ask(client, ex), batch))
    got = [(a.model_extra["retlink"]["entity"] or {}).get("id", "NIL") for a in answers]
    assert got == [expected[ex["id"]] for ex in batch]


def _status_of(call) -> tuple[int, dict]:
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return info.value.status_code, info.value.body


def test_no_image_and_no_mention_is_400(client):
    status, body = _status_of(lambda: client.chat.completions.create(
        model="retlink", messages=user_message("The rocket lifted off.", None)))
    assert status == 400 and "image" in body["message"] and "[brackets]" in body["message"]
    assert body["type"] == "invalid_request_error"


def test_text_only_request_links_like_the_python_linker(client, linker):
    """No image part: a text-only link (captioning and image retrieval skipped), the same answer
    as `Linker.link(None, ...)` on the same text."""
    ex = EXAMPLES[2]
    want = linker.link(None, ex["mention"], ex["context"])
    resp = client.chat.completions.create(model="retlink", messages=user_message(ex["context"], None))
    result = resp.model_extra["retlink"]
    assert (result["entity"] or {}).get("id", "NIL") == want.entity_id
    assert result["mention"] == ex["mention"]
    assert "features" not in result and want.features is not None  # pool rows stay out of responses
    caption = next(t for t in result["trace"] if t["node"] == "caption")
    assert caption["skipped"], caption


def test_corrupt_image_is_400(client):
    good = (DEMO / "images" / "rocket.jpg").read_bytes()
    truncated = "data:image/jpeg;base64," + base64.b64encode(good[: len(good) // 3]).decode()
    status, body = _status_of(lambda: client.chat.completions.create(
        model="retlink", messages=user_message("The [Falcon] lifted off.", truncated)))
    assert status == 400 and ("corrupt" in body["message"] or "truncated" in body["message"])
    status, body = _status_of(lambda: client.chat.completions.create(
        model="retlink", messages=user_message("The [Falcon] lifted off.", "data:image/png;base64,@@not-base64@@")))
    assert status == 400 and "base64" in body["message"]


def test_missing_mention_marker_is_400(client):
    status, body = _status_of(lambda: client.chat.completions.create(
        model="retlink", messages=user_message("The Falcon lifted off.", data_uri(DEMO / "images" / "rocket.jpg"))))
    assert status == 400 and "[brackets]" in body["message"]


def test_oversized_body_is_413(client, settings):
    blob = "data:image/png;base64," + "A" * (settings.max_body_bytes + 10)
    status, body = _status_of(lambda: client.chat.completions.create(
        model="retlink", messages=user_message("The [Falcon] lifted off.", blob)))
    assert status == 413 and body["code"] == "body_too_large"


def test_chunked_oversized_body_is_413(server, settings):
    def chunks():
        yield b'{"model": "retlink", "messages": [{"role": "user", "content": "'
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    r = httpx.post(f"{server.url}/v1/chat/completions", content=chunks(),
                   headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_image_over_pixel_limit_is_413(client):
    buf = io.BytesIO()
    Image.new("L", (7000, 6000)).save(buf, format="PNG")  # 42 Mpx, a few KB: a decompression bomb
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    status, body = _status_of(lambda: client.chat.completions.create(
        model="retlink", messages=user_message("The [Falcon] lifted off.", uri)))
    assert status == 413 and "pixels" in body["message"]


def test_wrong_or_missing_key_is_401(server):
    for key in ("wrong-key", ""):
        bad = chat_client(f"{server.url}/v1", api_key=key or "x")
        if not key:
            r = httpx.get(f"{server.url}/v1/models")
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            continue
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def test_unknown_model_is_404(client):
    status, body = _status_of(lambda: client.chat.completions.create(
        model="gpt-9", messages=user_message("The [Falcon] lifted off.", data_uri(DEMO / "images" / "rocket.jpg"))))
    assert status == 404 and body["code"] == "model_not_found"


def test_over_the_concurrency_limit_is_429(linker):
    settings = ServerSettings(max_concurrent_requests=1)
    with ServerThread(create_app(linker, settings)) as srv:
        c = chat_client(f"{srv.url}/v1", api_key="x")
        ex = EXAMPLES[2]
        stream = ask(c, ex, stream=True)
        next(iter(stream))  # the first request is now in flight
        with pytest.raises(openai.RateLimitError):
            ask(c, ex)
        assert list(stream)  # the first one still completes
        assert ask(c, ex).choices[0].message.content  # and the slot is free again


def test_not_ready_while_loading_is_503():
    import threading

    release = threading.Event()

    def slow_factory():
        release.wait(30)
        raise RuntimeError("no models here")

    with ServerThread(create_app(slow_factory, ServerSettings())) as srv:
        r = httpx.get(f"{srv.url}/ready")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        c = chat_client(f"{srv.url}/v1", api_key="x")
        with pytest.raises(openai.InternalServerError) as info:
            ask(c, EXAMPLES[0])
        assert info.value.status_code == 503
        release.set()
        # the loader thread records the failure when the machine gets round to it: wait on that,
        # with a bound far beyond a loaded machine's delay, rather than on a number of requests
        def failure() -> str:
            message = httpx.get(f"{srv.url}/ready").json()["error"]["message"]
            return message if "failed" in message else ""

        message = wait_until(failure, "the loader's failure on /ready")
        assert "no models here" in message
