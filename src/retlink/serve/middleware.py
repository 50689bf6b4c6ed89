"""The server's ASGI middleware, outermost first: `RequestLog` (a request id and one access line
per request), `ServerErrors` (an unexpected exception is a 500 the connection survives to
read; every 5xx says `Connection: close`), `BodyLimit` (413 over the body limit) and
`DrainGate` (503 while the server drains). Each does one thing, in plain ASGI, so that none
holds a response body in memory or hides a streaming response's end.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from retlink.serve.protocol import error_json
from retlink.serve.service import InFlight

log = logging.getLogger(__name__)
access_log = logging.getLogger("retlink.access")

#: the request being served, for log lines (see `RequestLog`)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestLog:
    """A request id on every response (`X-Request-ID`: the client's, when it sends a sane one) and
    one structured access log line per request (method, path, status, milliseconds, request id)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        started, status = time.perf_counter(), [0]

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            ms = (time.perf_counter() - started) * 1000
            access_log.info("%s %s %s %.0fms id=%s", scope.get("method"), scope.get("path"), status[0] or "-", ms,
                            rid, extra={"request_id": rid, "method": scope.get("method"), "path": scope.get("path"),
                                        "status": status[0], "ms": round(ms, 1)})
            request_id.reset(token)


class ServerErrors:
    """Server-side failures end their connection cleanly. An exception that reaches here becomes
    OpenAI's error JSON with 500, sent whole and not re-raised (Starlette's own handler re-raises,
    and uvicorn then drops the connection without a word: the client's next request on it met
    ECONNRESET). Every 5xx response, whoever made it, says `Connection: close`, so a client never
    reuses a connection after a failure the server could not classify. 4xx responses keep the
    connection open. An exception after the response started (a stream) can only cut it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_closing_5xx(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 500:
                    kept = [(k, v) for k, v in message.get("headers") or [] if k.lower() != b"connection"]
                    message["headers"] = [*kept, (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, receive, send_closing_5xx)
        except Exception as e:
            if started:
                raise
            log.exception("unexpected error")
            await error_json(500, f"internal error: {type(e).__name__}", "server_error")(scope, receive, send)


class BodyLimit:
    """413 for bodies over the limit, by Content-Length or while reading."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = error_json(413, self._message(int(declared)), "invalid_request_error", "body_too_large")
            return await response(scope, receive, send)
        if declared:  # the HTTP layer holds the body to its declared length
            return await self.app(scope, receive, send)
        # No Content-Length (chunked): read the body here, within the limit, then replay it.
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                response = error_json(413, self._message(len(body)), "invalid_request_error", "body_too_large")
                return await response(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self, size: int) -> str:
        return f"request body is {size:,}+ bytes, over the limit of {self.max_bytes:,}"


class Drain:
    """What the launcher and the app share about shutting down: the flag, and the requests in
    flight, which are the service's own count (`InFlight`), not a second one."""

    def __init__(self, retry_after_s: int, requests: InFlight) -> None:
        self.retry_after_s = retry_after_s
        self.draining = False
        self.requests = requests

    @property
    def in_flight(self) -> int:
        return self.requests.active


class DrainGate:
    """While draining, answers every new request with 503 (OpenAI's error JSON), `Retry-After`
    and `Connection: close` without running it. uvicorn's own shutdown closes the listening
    socket first, so a request arriving meanwhile would be refused at the connection, which a
    client or a load balancer cannot tell from a dead host; here it gets an answer."""

    def __init__(self, app: Any, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and self.drain.draining:
            response = error_json(503, "the server is shutting down; retry shortly", "server_error", "shutting_down")
            response.headers["Retry-After"] = str(self.drain.retry_after_s)
            return await response(scope, receive, send)
        await self.app(scope, receive, send)
