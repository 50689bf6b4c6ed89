"""The server's defects from the hostile probe (issue 32), each reproduced over real HTTP against a
real uvicorn server on 127.0.0.1 (or, for the command line, a real `retlink serve` process):

- 2: a lone surrogate in the text crashed the tokenizer (500, then a silently dropped keep-alive
  connection; with `stream: true` a 200 and an error event). Now 400 before any stream starts.
- 4: `/v1/attack` with a seed torch cannot take (2**80) was a 500; a non-finite eps got through.
- 9: `serve --port 99999` logged that port and listened on a random one.
- 13: `serve --api-key ""` let `Authorization: Bearer ` in; no warning on a public bind.
- 14: `/v1/attack` with an unknown `entity_id` silently attacked "away" (200).
- keep-alive: a connection survives every 4xx; after a 5xx the server says `Connection: close`
  and closes it cleanly, so a client's next request never meets a reset.

The linkers are the real one (module fixture: the surrogate crash was the real tokenizer's, and
the attack's entity check needs the real KB) or injected faults, named as such.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
from pydantic import ValidationError

from retlink.serve.app import ServerSettings, create_app
from retlink.serve.attack import MAX_SEED, AttackRequest, AttackSettings
from tests.conftest import REPO
from tests.loopback import free_port
from tests.server.conftest import DEMO, ServerThread, data_uri, fast_config
from tests.waiting import answers_200, wait_until

ROCKET = data_uri(DEMO / "images" / "rocket.jpg")
API_KEY = "hostile-key-1"


@pytest.fixture(scope="module")
def real_server():
    """The real linker (embedded default models, demo KB) behind a server with an API key and the
    attack endpoint on."""
    from retlink.agent.linker import Linker

    settings = ServerSettings(api_key=API_KEY, attack=AttackSettings(enabled=True, max_steps=5),
                              request_timeout_s=1500)
    with Linker.from_config(fast_config()) as linker, ServerThread(create_app(linker, settings)) as srv:
        yield srv


def connect(srv: ServerThread) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", srv.port, timeout=600)


def send(conn: http.client.HTTPConnection, method: str, path: str, body: str | bytes | None = None,
         key: str | None = API_KEY, **headers: str) -> tuple[http.client.HTTPResponse, bytes]:
    """One request over `conn` (raw JSON text, so a test can send what json.dumps would escape or
    refuse), the response read whole."""
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response, response.read()


def error_of(raw: bytes) -> dict:
    return json.loads(raw)["error"]


# --- 2: invalid Unicode in the text -----------------------------------------------------------

SURROGATE_TEXT = "The [Fal\\ud800con] rose."  # JSON's escape of a lone surrogate


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("content", "field"),
    [
        (f'"{SURROGATE_TEXT}"', "message text"),
        (f'[{{"type": "text", "text": "{SURROGATE_TEXT}"}}, {{"type": "image_url", "image_url": {{"url": "{ROCKET}"}}}}]',
         "message text"),
        ('[{"type": "text", "text": "The [Falcon] rose."}, {"type": "image_url", "image_url": {"url": "http://a\\udc80.b/x.png"}}]',
         "image_url"),
    ],
    ids=["chat-content", "text-part", "image-url"],
)
def test_lone_surrogate_is_400_before_any_stream_and_the_connection_survives(real_server, content, field, stream):
    conn = connect(real_server)
    body = f'{{"model": "retlink", "stream": {json.dumps(stream)}, "messages": [{{"role": "user", "content": {content}}}]}}'
    response, raw = send(conn, "POST", "/v1/chat/completions", body)
    assert response.status == 400, raw
    assert response.getheader("content-type") == "application/json"  # not a stream that errs later
    error = error_of(raw)
    assert f"the {field} is not valid Unicode" in error["message"] and error["type"] == "invalid_request_error"
    first = conn.sock
    response, raw = send(conn, "GET", "/v1/models")  # the same connection, still open
    assert response.status == 200 and conn.sock is first


def test_the_real_linker_still_links_after_a_refused_surrogate(real_server):
    """The refusal is the check, not a broken linker: a valid text after it links (text only)."""
    conn = connect(real_server)
    send(conn, "POST", "/v1/chat/completions",
         f'{{"messages": [{{"role": "user", "content": "{SURROGATE_TEXT}"}}]}}')
    body = json.dumps({"messages": [{"role": "user", "content": "The [Falcon 9] rose from the pad."}]})
    response, raw = send(conn, "POST", "/v1/chat/completions", body)
    assert response.status == 200, raw
    assert json.loads(raw)["retlink"]["mention"] == "Falcon 9"


# --- 4 and 14: /v1/attack's numbers and entity --------------------------------------------------

@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('"seed": 1208925819614629174706176', "seed"),  # 2**80: torch's manual_seed overflowed (500)
        ('"seed": -1', "seed"),
        ('"eps": Infinity', "eps"),  # Python's JSON reader takes these tokens
        ('"eps": NaN', "eps"),
        ('"eps": 0', "eps"),
    ],
)
def test_attack_numbers_out_of_range_are_400(real_server, extra, field):
    conn = connect(real_server)
    response, raw = send(conn, "POST", "/v1/attack", f'{{"image": "{ROCKET}", "steps": 2, {extra}}}')
    assert response.status == 400, raw
    assert f"invalid request: {field}:" in error_of(raw)["message"]


def test_attack_seed_range_is_what_torch_takes():
    import torch

    assert AttackRequest(image="data:,", seed=MAX_SEED).seed == MAX_SEED
    torch.Generator().manual_seed(MAX_SEED)  # the largest accepted seed is one torch takes
    with pytest.raises(ValidationError):
        AttackRequest(image="data:,", seed=MAX_SEED + 1)


def test_attack_on_an_unknown_entity_is_404_naming_it(real_server):
    conn = connect(real_server)
    body = json.dumps({"image": ROCKET, "attack": "fgsm", "steps": 1, "entity_id": "no_such_entity_42"})
    response, raw = send(conn, "POST", "/v1/attack", body)
    assert response.status == 404, raw
    error = error_of(raw)
    assert "no_such_entity_42" in error["message"] and error["code"] == "entity_not_found"
    # the id the KB does hold passes the check (the entity endpoint reads the same KB)
    response, raw = send(conn, "GET", "/v1/entities/falcon_9")
    assert response.status == 200, raw


# --- keep-alive: 4xx keep the connection, 5xx close it cleanly ----------------------------------

class FailingLinker:
    """Fault injection: every link raises an error the server cannot classify (a 500)."""

    async def alink(self, *args, **kwargs):
        raise RuntimeError("injected fault")

    async def astream(self, *args, **kwargs):
        raise RuntimeError("injected fault")
        yield


class NeverLoadedLinker:
    """Fault injection: a linker factory that stays loading until `release` is set (`/ready` 503)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self) -> FailingLinker:
        self.release.wait(60)
        return FailingLinker()


@pytest.fixture(scope="module")
def failing_server():
    settings = ServerSettings(api_key=API_KEY, max_body_bytes=2048)
    with ServerThread(create_app(FailingLinker(), settings)) as srv:
        yield srv


def test_a_connection_survives_every_4xx(failing_server):
    conn = connect(failing_server)
    send(conn, "GET", "/health")
    first = conn.sock
    chat = json.dumps({"messages": [{"role": "user", "content": "The [Falcon] rose."}]})
    cases = [
        (("POST", "/v1/chat/completions", "{not json"), 400),
        (("POST", "/v1/chat/completions", '{"messages": []}'), 400),
        (("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "no mention"}]})), 400),
        (("GET", "/v1/models", None, "wrong-key"), 401),
        (("GET", "/v1/models", None, None), 401),
        (("GET", "/no/such/route", None), 404),
        (("POST", "/v1/chat/completions", json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})), 404),
        (("DELETE", "/v1/models", None), 405),
        (("POST", "/v1/chat/completions", "x" * 4096), 413),
    ]
    for args, status in cases:
        response, raw = send(conn, *args)
        assert response.status == status, (args, raw)
        assert response.getheader("connection") != "close", args
        assert conn.sock is first, f"the server closed the connection after {status} ({args})"
    response, _ = send(conn, "POST", "/v1/chat/completions", chat)  # and a 5xx still closes it
    assert response.status == 500


def drive_5xx_then_200(srv: ServerThread, method: str, path: str, body: str | None, status: int) -> dict:
    """A 5xx on one connection: `Connection: close`, the server's clean close (EOF, not a reset),
    then the same client's next request answered on a fresh connection."""
    conn = connect(srv)
    response, raw = send(conn, method, path, body)
    assert response.status == status, raw
    assert response.getheader("connection") == "close"
    assert conn.sock is None  # http.client closed its side, as told
    response, _ = send(conn, "GET", "/health")  # the next request, through the same client
    assert response.status == 200
    return error_of(raw)


def test_an_unexpected_error_is_500_with_connection_close(failing_server):
    body = json.dumps({"messages": [{"role": "user", "content": "The [Falcon] rose."}]})
    error = drive_5xx_then_200(failing_server, "POST", "/v1/chat/completions", body, 500)
    assert error == {"message": "internal error: RuntimeError", "type": "server_error", "param": None, "code": None}
    # and the server's side ends with a FIN, not a reset: a raw socket reads EOF after the answer
    payload = body.encode()
    with socket.create_connection(("127.0.0.1", failing_server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
        received = b""
        while chunk := sock.recv(65536):  # a reset would raise ConnectionResetError here
            received += chunk
    assert received.startswith(b"HTTP/1.1 500") and b"internal error: RuntimeError" in received


def test_a_503_while_loading_says_connection_close():
    factory = NeverLoadedLinker()
    with ServerThread(create_app(factory, ServerSettings())) as srv:
        try:
            error = drive_5xx_then_200(srv, "GET", "/ready", None, 503)
        finally:
            # released while the server still runs: uvicorn's shutdown waits for the loading
            # linker, so a later release cost the 30 s of `ServerThread`'s join timeout
            factory.release.set()
    assert error["code"] == "not_ready"


# --- 9 and 13: `retlink serve`'s options ---------------------------------------------------------

def retlink_serve(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "retlink.cli", "serve", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--port", "99999"], ["--port", "99999"]),
        (["--port", "0"], ["--port"]),
        (["--api-key", ""], ["--api-key", "empty"]),
        (["--api-key", "two words"], ["--api-key", "spaces"]),
    ],
)
def test_serve_refuses_a_bad_port_or_key_with_one_line_and_exit_2(args, names):
    """Before: `--port 99999` served on a random port, `--api-key ""` let `Bearer ` in. The
    process must exit by itself (a server that started instead fails the timeout)."""
    port = [] if "--port" in args else ["--port", str(free_port())]
    proc = retlink_serve(*args, *port)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: retlink serve: "), err
    assert all(name in lines[0] for name in names), lines[0]


def test_an_empty_key_cannot_be_configured():
    with pytest.raises(ValidationError, match="api_key"):
        ServerSettings(api_key="")
    with pytest.raises(ValidationError, match="extra"):  # a misspelt setting is an error, not ignored
        ServerSettings(api_keys="k")
    with pytest.raises(ValidationError, match="extra"):
        AttackSettings(max_step=3)


def test_serve_on_a_public_address_without_a_key_warns(tmp_path):
    """`--host 0.0.0.0` without a key starts (behind an authenticating proxy that is fair) but says
    so on stderr. The config does not exist, so the linker fails to load and the test loads no
    models: the server is up (`/health`) regardless, which is what is checked."""
    port = free_port()
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "retlink.cli", "serve", "--host", "0.0.0.0", "--port",
                                 str(port), "--config", str(tmp_path / "missing.yaml")],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_until(answers_200(f"http://127.0.0.1:{port}/health", proc, log.read_text), "retlink serve to come up", 180)
        warning = wait_until(lambda: [x for x in log.read_text().splitlines() if "without an API key" in x],
                             "the warning", 30)
        assert f"0.0.0.0:{port}" in warning[0] and "--api-key" in warning[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_help_is_honest_about_public_binds():
    proc = retlink_serve("--help", env={**os.environ, "COLUMNS": "400"})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    flat = " ".join(out.split())
    assert "loopback unless you set an API key" not in flat  # it read as if public binds were refused
    assert "logs a warning" in flat and "1 to 65535" in flat
