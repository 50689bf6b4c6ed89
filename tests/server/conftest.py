"""Fixtures for the chat-endpoint tests: one real Linker (embedded default models) shared by a
real uvicorn server on loopback, driven with the official `openai` client.

The linker is the embedded default with the enhancer off and a short chain of thought, so that
16 concurrent requests on 2 cores finish in well under a minute: same models and graph, smaller
budgets.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import uvicorn

from retlink.config import load_config
from retlink.server import ServerSettings, create_app

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
API_KEY = "test-key-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving an app on 127.0.0.1 in a background thread of this process."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


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
    from retlink.linker import Linker

    return Linker.from_config(fast_config())


@pytest.fixture(scope="session")
def settings() -> ServerSettings:
    return ServerSettings(api_key=API_KEY, max_body_bytes=2 * 1024 * 1024, max_concurrent_requests=32)


@pytest.fixture(scope="session")
def server(linker, settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(linker, settings)) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=180)


def data_uri(path: Path) -> str:
    mime = "image/png" if path.suffix == ".png" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def user_message(text: str, image_url: str | None) -> list[dict]:
    parts: list[dict] = [{"type": "text", "text": text}]
    if image_url is not None:
        parts.append({"type": "image_url", "image_url": {"url": image_url}})
    return [{"role": "user", "content": parts}]
