"""Regression tests of issue 15 for the chat endpoint (a real uvicorn server on loopback):
a decompression bomb is 413 (it was a 500 and a dropped connection), over-long text is 400
before any work starts, and a client that disconnects cancels its link and frees its slot.

The linkers here are injected faults, named as such: one that must never be reached (the
request must be refused before linking) and one whose link hangs until cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading

import httpx
import pytest

from retlink.agent.config import load_config
from retlink.serve.app import ServerSettings, create_app
from tests.hostile.common import bomb_png
from tests.server.conftest import DEMO, ServerThread, data_uri, user_message
from tests.waiting import wait_until


class UnreachableLinker:
    """Fault: fails the request (500) if the endpoint ever starts a link."""

    config = load_config("default")

    async def alink(self, *args, **kwargs):
        raise AssertionError("the endpoint linked a request it should have refused")

    async def astream(self, *args, **kwargs):
        raise AssertionError("the endpoint linked a request it should have refused")
        yield


class HangingLinker:
    """Fault: a link that never finishes; records when it starts and when it is cancelled."""

    config = load_config("default")

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()

    async def alink(self, *args, **kwargs):
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.fixture(scope="module")
def refusing():
    with ServerThread(create_app(UnreachableLinker(), ServerSettings())) as srv:
        yield srv


def post(srv, text: str, image_url: str, **extra) -> httpx.Response:
    body = {"model": "retlink", "messages": user_message(text, image_url), **extra}
    return httpx.post(f"{srv.url}/v1/chat/completions", json=body, timeout=60)


@pytest.mark.parametrize("stream", [False, True])
def test_bomb_data_uri_is_413(refusing, stream):
    uri = "data:image/png;base64," + base64.b64encode(bomb_png()).decode()
    r = post(refusing, "The [Falcon] lifted off.", uri, stream=stream)
    assert r.status_code == 413, r.text
    assert "pixels" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (f"The [{'F' * 300}] lifted off.", "limits.max_mention_chars"),
        ("The [Falcon] lifted off. " + "x" * 9000, "limits.max_context_chars"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_over_long_text_is_400_before_linking(refusing, text, key, stream):
    r = post(refusing, text, data_uri(DEMO / "images" / "rocket.jpg"), stream=stream)
    assert r.status_code == 400, r.text
    assert key in r.json()["error"]["message"] and r.json()["error"]["type"] == "invalid_request_error"


def test_client_disconnect_cancels_the_link_and_frees_the_slot():
    linker = HangingLinker()
    app = create_app(linker, ServerSettings(max_concurrent_requests=1))
    with ServerThread(app) as srv:
        body = json.dumps({"model": "retlink", "messages": user_message(
            "The [Falcon] lifted off.", data_uri(DEMO / "images" / "rocket.jpg"))}).encode()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            assert linker.started.wait(10), "the link never started"
            assert app.state.service.in_flight.active == 1
        # the client is gone: the link is cancelled and its slot freed at once, not after the
        # 300 s request timeout
        assert linker.cancelled.wait(10), "the link kept running after the client left"
        wait_until(lambda: app.state.service.in_flight.active == 0, "the gate to empty", 10)
