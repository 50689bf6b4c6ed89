"""Fixtures for the chat-endpoint tests: one real Linker (embedded default models) shared by a
real uvicorn server on loopback, driven with the official `openai` client.

Connections: the servers run with the endpoint's own keep-alive (`ServerSettings.keep_alive_s`,
mapped onto uvicorn by `retlink.serve.launcher.uvicorn_config`), and the clients' pools drop an idle
connection after `CLIENT_KEEPALIVE_S`, which is shorter, so a pooled connection is never reused
as the server closes it (tests/server/test_keep_alive.py).

The linker is the embedded default with the enhancer off and a 12-token chain of thought (the
default has none; with one, the answer carries a `reasoning` for the endpoint to pass on): same
models and graph. Still, a link takes 5 to 30 s on 2 cores shared with other
jobs, so the timeouts here are sized for a loaded machine, not a quiet one.
"""

from __future__ import annotations

import base64
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest
import uvicorn

from retlink.agent.config import load_config
from retlink.serve.app import ServerSettings, create_app
from retlink.serve.launcher import uvicorn_config
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "retlink" / "data" / "demo"
API_KEY = "test-key-123"


#: seconds the test clients' pools keep an idle connection (the openai client's own default,
#: spelled out): below every test server's keep-alive, so the client always drops it first
CLIENT_KEEPALIVE_S = 5.0


class ServerThread:
    """uvicorn serving an app on 127.0.0.1 in a background thread of this process, configured from
    the app's `ServerSettings` (its keep-alive included) like `retlink serve`. The listening socket
    is bound here and handed to uvicorn, so no other process can take the port in between."""

    def __init__(self, app) -> None:
        settings: ServerSettings = app.state.settings
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn_config(app, settings, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        def started() -> bool:
            assert self.thread.is_alive(), "uvicorn's thread ended before it started"
            return self.server.started

        wait_until(started, "uvicorn to start", 30)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if self.thread.is_alive():  # said, not swallowed: a 30 s wait here once hid a slow test
            warnings.warn("the test server's thread did not stop within 30 s", stacklevel=2)
        self.sock.close()


def chat_client(base_url: str, api_key: str = API_KEY, **kw) -> openai.OpenAI:
    """The official client as the tests use it: no retries (a failure must show), a timeout that a
    loaded 2-core machine linking several requests at once stays within, and a pool that drops
    idle connections after CLIENT_KEEPALIVE_S (below the servers' keep-alive)."""
    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=CLIENT_KEEPALIVE_S)
    options = {"max_retries": 0, "timeout": 1500, **kw}
    return openai.OpenAI(base_url=base_url, api_key=api_key, http_client=openai.DefaultHttpxClient(limits=limits),
                         **options)


def fast_config():
    cfg = load_config("default")
    return cfg.model_copy(
        update={
            "enhancer": cfg.enhancer.model_copy(update={"enabled": False}),
            "reasoner": cfg.reasoner.model_copy(update={"max_reasoning_tokens": 12}),
        }
    )


@pytest.fixture(scope="session")
def linker():
    from retlink.agent.linker import Linker

    return Linker.from_config(fast_config())


@pytest.fixture(scope="session")
def settings() -> ServerSettings:
    # request_timeout_s: eight links at once on 2 cores that other jobs load to 13 took over the
    # 300 s default; a test server must not time out where only the machine is slow
    return ServerSettings(api_key=API_KEY, max_body_bytes=2 * 1024 * 1024, max_concurrent_requests=32,
                          request_timeout_s=1500)


@pytest.fixture(scope="session")
def server(linker, settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(linker, settings)) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    return chat_client(f"{server.url}/v1")


def data_uri(path: Path) -> str:
    mime = "image/png" if path.suffix == ".png" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def user_message(text: str, image_url: str | None) -> list[dict]:
    parts: list[dict] = [{"type": "text", "text": text}]
    if image_url is not None:
        parts.append({"type": "image_url", "image_url": {"url": image_url}})
    return [{"role": "user", "content": parts}]
