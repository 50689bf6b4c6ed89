"""The server's keep-alive against the clients' connection pools (issue 19).

The race: a client pool keeps an idle connection for a while (httpx and the openai client: 5 s)
and a server closes one after its keep-alive (uvicorn's default: also 5 s). When the two are
equal, a request sent on a pooled connection can cross the server's close and fail with "Server
disconnected without sending a response", which is what flaked `make test`. The losing side of
that race is reproduced here deterministically with a raw socket (a client that reuses a
connection without checking it first): idle past the server's keep-alive, then reuse. The fix is
a server keep-alive longer than the clients' pools keep idle connections and than a link takes
(`ServerSettings.keep_alive_s`, `retlink serve --keep-alive`), so the client always drops an idle
connection first.

No models here: the app's linker factory fails at once, and /health answers regardless.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from retlink.serve.app import ServerSettings, create_app
from retlink.serve.launcher import uvicorn_config
from tests.conftest import REPO
from tests.loopback import free_port
from tests.server.conftest import CLIENT_KEEPALIVE_S, ServerThread
from tests.waiting import answers_200, wait_until

#: uvicorn's own keep-alive, which `retlink serve` used before it set one
UVICORN_DEFAULT_KEEP_ALIVE_S = uvicorn.Config(app=None).timeout_keep_alive


def no_linker() -> None:
    raise RuntimeError("no linker in the keep-alive tests")


@contextmanager
def serving(**settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(no_linker, ServerSettings(**settings))) as srv:
        yield srv


def request_on(sock: socket.socket) -> bytes:
    """Send GET /health on an open connection; the raw answer, b"" when the server has closed it."""
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer
    except (BrokenPipeError, ConnectionResetError):
        return b""


def reuse_after_idle(port: int, idle_s: float) -> tuple[bytes, bytes]:
    """Two requests on one keep-alive connection with `idle_s` of silence between them."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        first = request_on(sock)
        time.sleep(idle_s)
        return first, request_on(sock)


def test_reusing_a_connection_idle_past_the_keep_alive_is_the_race():
    with serving(keep_alive_s=1.0) as srv:
        first, second = reuse_after_idle(srv.port, idle_s=2.0)
    assert first.startswith(b"HTTP/1.1 200")
    assert second == b""  # "Server disconnected without sending a response": what the flake was


def test_a_connection_idle_as_long_as_a_pool_keeps_it_is_still_served():
    """With the default settings, idle past uvicorn's default keep-alive (and past the clients'
    pool expiry) and reuse: still served. Before the fix this failed every time."""
    assert ServerSettings().keep_alive_s > max(UVICORN_DEFAULT_KEEP_ALIVE_S, CLIENT_KEEPALIVE_S)
    with serving() as srv:
        first, second = reuse_after_idle(srv.port, idle_s=UVICORN_DEFAULT_KEEP_ALIVE_S + 1.0)
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")


def test_a_pool_that_expires_before_the_server_never_meets_the_close():
    """The relation the test clients rely on, scaled down: a pool expiry shorter than the
    server's keep-alive makes the client open a fresh connection after idling, never reuse one
    the server may be closing."""

    def local_port(r: httpx.Response) -> int:
        assert r.status_code == 200
        return r.extensions["network_stream"].get_extra_info("client_addr")[1]

    with serving(keep_alive_s=3.0) as srv, httpx.Client(limits=httpx.Limits(keepalive_expiry=1.0)) as client:
        first = local_port(client.get(f"{srv.url}/health"))
        again = local_port(client.get(f"{srv.url}/health"))  # at once: the pooled connection is reused
        time.sleep(1.5)  # past the pool's expiry, short of the server's keep-alive
        later = local_port(client.get(f"{srv.url}/health"))
    assert first == again != later


def test_the_test_clients_drop_idle_connections_before_the_test_servers_do(settings):
    assert settings.keep_alive_s > CLIENT_KEEPALIVE_S
    assert ServerSettings().keep_alive_s > CLIENT_KEEPALIVE_S


def test_uvicorn_gets_the_keep_alive_from_the_settings():
    cfg = uvicorn_config(create_app(no_linker), ServerSettings(keep_alive_s=12.5, port=9999))
    assert (cfg.timeout_keep_alive, cfg.port, cfg.host) == (12.5, 9999, "127.0.0.1")


@pytest.mark.slow  # a real `retlink serve` process: imports torch and the rest, 10 to 40 s
def test_retlink_serve_keep_alive_option_end_to_end(tmp_path):
    """`retlink serve --keep-alive 1` in a real process: idle connections are closed after 1 s."""
    port = free_port()
    missing = tmp_path / "missing.yaml"  # the linker fails to load at once; /health still answers
    proc = subprocess.Popen(
        [sys.executable, "-m", "retlink.cli", "serve", "--port", str(port), "--keep-alive", "1", "-c", str(missing)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        log = lambda: proc.stderr.read().decode()  # noqa: E731
        wait_until(answers_200(f"http://127.0.0.1:{port}/health", proc, log), "retlink serve to come up", 120)
        first, second = reuse_after_idle(port, idle_s=2.0)
        assert first.startswith(b"HTTP/1.1 200") and second == b""
        first, second = reuse_after_idle(port, idle_s=0.2)
        assert second.startswith(b"HTTP/1.1 200")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
