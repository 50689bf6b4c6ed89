"""A real HTTP server on 127.0.0.1 for tests that need one: give it a handler, use its URLs.

Shared so that each test module writes only its routes. It records what it was asked (paths and,
for POSTs, decoded bodies), binds an ephemeral loopback port, and stops when its `with` ends.

For https: `make_test_pki` makes a CA and certificates with the openssl command, and `TLSServing`
turns a server class into one that speaks TLS (`TLSLoopbackHTTP` here, the search tests' routed
`TLSLoopbackServer`).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A loopback port that was free a moment ago (for a server started in another process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    #: the default listen backlog (5) drops SYNs in a burst of connections on a busy machine,
    #: and the client retries 1 s later
    request_queue_size = 128

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


class TLSServing:
    """Mixin for a ThreadingHTTPServer (listed before it) that speaks https; call `init_tls` in
    `__init__`.

    The handshake runs in the request's own thread (not in accept), so a client that refuses the
    certificate stalls nobody. It counts connections (a refused host must not get one, a refused
    certificate must not be retried) and records the SNI names and handshake failures it saw.
    """

    def init_tls(self, certfile: Path, keyfile: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        self.context.sni_callback = self._sni
        self.connections = 0
        self.server_names: list[str | None] = []
        self.handshake_errors: list[str] = []
        self._tls_lock = threading.Lock()

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        with self._tls_lock:
            self.server_names.append(name)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        with self._tls_lock:
            self.connections += 1
        sock.settimeout(5)
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request, client_address) -> None:
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as e:
            with self._tls_lock:
                self.handshake_errors.append(str(e))
            return
        super().finish_request(request, client_address)


class TLSLoopbackHTTP(TLSServing, LoopbackHTTP):
    """A LoopbackHTTP that speaks https with the given certificate."""

    def __init__(self, handler: type[QuietHandler], certfile: Path, keyfile: Path) -> None:
        super().__init__(handler)
        self.init_tls(certfile, keyfile)

    def url(self, path: str = "") -> str:
        return f"https://127.0.0.1:{self.server_address[1]}{path}"


@dataclass(frozen=True)
class TlsCerts:
    """Certificates made for a test session (PEM files): a CA, a server certificate it signed
    for `scrape.test` and 127.0.0.1, and a self-signed one for the same names."""

    ca: Path
    cert: Path
    key: Path
    self_signed_cert: Path
    self_signed_key: Path


_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = retlink test
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:scrape.test, IP:127.0.0.1
subjectKeyIdentifier = hash
"""


def make_test_pki(root: Path) -> TlsCerts:
    """Generate TlsCerts under root with the openssl command (EC P-256 keys, valid two days);
    skips the calling test without the command."""
    if shutil.which("openssl") is None:
        from tests.conftest import skip_or_fail

        skip_or_fail("the openssl command is needed to make test certificates")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True, timeout=60)

    (root / "openssl.cnf").write_text(_OPENSSL_CNF)
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-config", "openssl.cnf"]
    openssl("req", "-x509", *new_key, "-extensions", "ca_ext", "-days", "2", "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-new", *new_key, "-keyout", "server.key", "-out", "server.csr")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "2",
        "-days", "2", "-extfile", "openssl.cnf", "-extensions", "leaf_ext", "-out", "server.pem",
    )  # fmt: skip
    openssl("req", "-x509", *new_key, "-extensions", "leaf_ext", "-days", "2", "-keyout", "self.key", "-out", "self.pem")
    return TlsCerts(
        ca=root / "ca.pem",
        cert=root / "server.pem",
        key=root / "server.key",
        self_signed_cert=root / "self.pem",
        self_signed_key=root / "self.key",
    )
