"""A real HTTP server on 127.0.0.1 for tests that need one: give it a handler, use its URLs.

Shared so that each test module writes only its routes. It records what it was asked (paths and,
for POSTs, decoded bodies), binds an ephemeral loopback port, and stops when its `with` ends.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler with a one-call response and no access log on the test output."""

    server: LoopbackHTTP

    def send_body(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class LoopbackHTTP(ThreadingHTTPServer):
    """A threaded server on 127.0.0.1 (HTTP/1.0 unless the handler says otherwise)."""

    daemon_threads = True

    def __init__(self, handler: type[QuietHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.hits: Counter[str] = Counter()
        self.bodies: list[Any] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def record(self, path: str, body: Any = None) -> None:
        with self.lock:
            self.hits[path] += 1
            if body is not None:
                self.bodies.append(body)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def __enter__(self) -> LoopbackHTTP:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
