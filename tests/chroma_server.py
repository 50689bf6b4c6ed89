"""A real chroma server for tests: `chroma run` on a free 127.0.0.1 port, data in a temp folder.

The `chroma` command is chromadb's own CLI (installed with chromadb, nothing extra); it is run
through this Python (`chromadb.cli.cli.app`, what the `chroma` script calls), so it works from
any venv that has chromadb. Ready when `GET /api/v2/heartbeat` answers (about 1-3 s).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.loopback import free_port
from tests.waiting import answers_200, wait_until

CHROMA_CLI = "import sys; from chromadb.cli.cli import app; sys.argv[0] = 'chroma'; sys.exit(app())"


class ChromaServer:
    """One `chroma run --path DIR --host 127.0.0.1 --port PORT` process; `with` starts and stops it."""

    def __init__(self, data_dir: Path, ready_timeout_s: float = 90.0) -> None:
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.log = self.data_dir.with_name(self.data_dir.name + ".log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def address(self, name: str) -> str:
        """The CLI's address of a KB named `name` on this server."""
        return f"{self.url}/{name}"

    def start(self) -> ChromaServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-c", CHROMA_CLI, "run", "--path", str(self.data_dir),
               "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env={**os.environ, "NO_COLOR": "1"})
        tail = lambda: self.log.read_text(errors="replace")[-2000:]  # noqa: E731
        try:
            wait_until(answers_200(f"{self.url}/api/v2/heartbeat", self.proc, tail), "chroma run", self.ready_timeout_s,
                       interval_s=0.1, detail=tail)
        except AssertionError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def __enter__(self) -> ChromaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RecordingRelay:
    """A TCP relay in front of a server that keeps every byte the client sent (to check what
    reaches the wire, e.g. an auth header). Not a fake: the real server answers everything."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.sent = bytearray()
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
