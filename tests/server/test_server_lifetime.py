"""The server's lifetime guarantees: an abandoned stream always gives its slot back (and its link
is cancelled), request ids, graceful shutdown on SIGTERM (requests in flight finish within the
grace, new ones get 503 with Retry-After meanwhile), and `Linker.close()`.

The slot tests drive the real app, uvicorn and HTTP with a fault-injection linker (`tests.server.stalling.StallingLinker`,
a fault named as such): its link reports one node and then stalls until released, which is what
a slow link looks like to the server, so a test can abandon requests mid-link deterministically
and count what was cancelled. No models are loaded for them.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from retlink.core.errors import RetlinkError
from retlink.serve.app import ServerSettings, create_app
from retlink.serve.launcher import DrainingServer, uvicorn_config
from tests.conftest import REPO
from tests.loopback import free_port
from tests.server.conftest import DEMO, ServerThread, data_uri, user_message
from tests.server.stalling import StallingLinker
from tests.waiting import answers_200, wait_until

IMAGE = data_uri(DEMO / "images" / "rocket.jpg")
BODY = {"model": "retlink", "stream": True, "messages": user_message("The [Falcon] lifted off.", IMAGE)}


@pytest.fixture
def stalling():
    linker = StallingLinker()
    app = create_app(linker, ServerSettings(max_concurrent_requests=4))
    with ServerThread(app) as srv:
        yield srv, linker, app.state.service.in_flight


def full_stream(url: str) -> list[dict]:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=BODY, timeout=60) as r:
        assert r.status_code == 200, r.read()
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


def test_fifty_streams_abandoned_after_their_first_chunk_give_every_slot_back(stalling):
    srv, linker, gate = stalling
    for _ in range(50):
        with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json=BODY, timeout=60) as r:
            assert r.status_code == 200
            first = next(r.iter_lines())
            assert first.startswith("data: ")
        # leaving the `with` closes the connection mid-stream, with the link stalled
    wait_until(lambda: gate.active == 0, "the gate to empty")
    wait_until(lambda: linker.cancelled == linker.started == 50, "every abandoned link to be cancelled")
    linker.stall = False
    with ThreadPoolExecutor(4) as pool:  # max_concurrent requests at once: all served, no 429
        streams = list(pool.map(full_stream, [srv.url] * 4))
    assert all(s[-1]["choices"][0]["finish_reason"] == "stop" for s in streams)


def test_clients_that_leave_before_the_first_chunk_give_their_slots_back(stalling):
    srv, linker, gate = stalling
    payload = json.dumps(BODY).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(request)  # and gone, before a byte of the answer
    # a request whose client already left may reach the app after the others have ended (the
    # server reads it late under load): wait until no new one has started for half a second
    seen = -1
    while seen != linker.started:
        seen = linker.started
        time.sleep(0.5)
        wait_until(lambda: gate.active == 0 and linker.cancelled == linker.started, "the abandoned requests to end")
    linker.stall = False
    with ThreadPoolExecutor(4) as pool:
        assert len(list(pool.map(full_stream, [srv.url] * 4))) == 4


def test_the_gate_still_refuses_beyond_the_limit(stalling):
    srv, _, gate = stalling
    streams = [httpx.stream("POST", f"{srv.url}/v1/chat/completions", json=BODY, timeout=60) for _ in range(4)]
    try:
        for s in streams:
            assert s.__enter__().status_code == 200
        wait_until(lambda: gate.active == 4, "four requests in flight")
        busy = httpx.post(f"{srv.url}/v1/chat/completions", json=BODY, timeout=60)
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "too_many_requests"
    finally:
        for s in streams:
            s.__exit__(None, None, None)
    wait_until(lambda: gate.active == 0, "the gate to empty")


def test_request_ids_are_echoed_or_made(stalling):
    srv, _, _ = stalling
    made = httpx.get(f"{srv.url}/health").headers["x-request-id"]
    assert len(made) == 16
    assert httpx.get(f"{srv.url}/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    odd = httpx.get(f"{srv.url}/health", headers={"X-Request-ID": "no spaces\tplease"}).headers["x-request-id"]
    assert odd != "no spaces\tplease" and len(odd) == 16


@pytest.mark.slow
def test_linker_close_stops_its_loop_and_refuses_later_links(linker):
    from retlink.agent.linker import Linker

    with Linker.from_config(linker.config) as own:  # the session's models, its own loop thread
        result = own.link(DEMO / "images" / "rocket.jpg", "Falcon", "The [Falcon] climbed away.")
        assert result.mention == "Falcon"
        thread = own._loop._thread
    assert not thread.is_alive()
    with pytest.raises(RetlinkError, match="closed"):
        own.link(DEMO / "images" / "rocket.jpg", "Falcon")
    own.close()  # a second close is harmless


SERVE_STALLING = """
import sys
from retlink.serve.app import ServerSettings, create_app
from retlink.serve.launcher import run_app
from tests.server.stalling import FileStallingLinker
settings = ServerSettings(port=int(sys.argv[1]), shutdown_grace_s=120)
run_app(create_app(FileStallingLinker(sys.argv[2]), settings), settings)
"""


@pytest.mark.slow  # a server process of its own: imports take 10 to 40 s on a loaded machine
def test_sigterm_lets_eight_requests_in_flight_finish_and_exits_0(tmp_path):
    port = free_port()
    release = tmp_path / "release"
    proc = subprocess.Popen([sys.executable, "-c", SERVE_STALLING, str(port), str(release)], cwd=REPO,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        log = lambda: proc.stderr.read().decode()  # noqa: E731
        wait_until(answers_200(f"{url}/health", proc, log), "the server to start", 180)
        first_chunks = threading.Semaphore(0)
        results: list[list[str]] = []

        def stream() -> None:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=BODY, timeout=300) as r:
                lines = []
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        lines.append(line[6:])
                        if len(lines) == 1:
                            first_chunks.release()
                results.append(lines)

        threads = [threading.Thread(target=stream) for _ in range(8)]
        for t in threads:
            t.start()
        for _ in threads:
            assert first_chunks.acquire(timeout=120)  # all eight are mid-link
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{url}/health", timeout=5).status_code == 503, "the drain to start", 60)
        # while the eight finish, a new request gets an answer: 503 with Retry-After, not a refusal
        late = httpx.post(f"{url}/v1/chat/completions", json=BODY, timeout=30)
        assert late.status_code == 503 and late.headers["retry-after"] == "5"
        assert late.json()["error"]["code"] == "shutting_down" and late.headers["x-request-id"]
        assert late.headers["connection"] == "close"
        assert proc.poll() is None
        release.touch()  # the stalled links may finish now
        for t in threads:
            t.join(timeout=120)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(results) == 8
    for lines in results:
        assert lines[-1] == "[DONE]"
        assert json.loads(lines[-2])["choices"][0]["finish_reason"] == "stop"


def test_the_drain_answers_503_and_ends_within_the_grace_when_links_never_finish():
    """In process, no signal: uvicorn's exit flag starts the same shutdown SIGTERM does. Two links
    stall for good; new requests get 503 while they hold, and the whole shutdown still ends
    within `shutdown_grace_s` (plus a margin for a loaded machine), cutting the stalled streams."""
    linker = StallingLinker()
    settings = ServerSettings(shutdown_grace_s=3, retry_after_s=7)
    app = create_app(linker, settings)
    sock = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = DrainingServer(uvicorn_config(app, settings, log_level="warning"), app.state.drain)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn to start")
    streams = [httpx.stream("POST", f"{url}/v1/chat/completions", json=BODY, timeout=60) for _ in range(2)]
    try:
        for s in streams:
            assert s.__enter__().status_code == 200
        wait_until(lambda: app.state.drain.in_flight == 2, "two links in flight")
        started = time.monotonic()
        server.should_exit = True
        wait_until(lambda: app.state.drain.draining, "the drain to start")
        for path in ("/health", "/v1/models"):
            r = httpx.get(f"{url}{path}", timeout=10)
            assert r.status_code == 503 and r.headers["retry-after"] == "7", (path, r.status_code)
        assert app.state.drain.in_flight == 2  # the 503s ran nothing
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert time.monotonic() - started < settings.shutdown_grace_s + 10
        assert linker.cancelled == 2  # cut at the end of the grace
    finally:
        for s in streams:
            with contextlib.suppress(httpx.HTTPError):
                s.__exit__(None, None, None)
        sock.close()
    with pytest.raises(httpx.TransportError):  # after the drain, the listener is closed
        httpx.get(f"{url}/health", timeout=5)
