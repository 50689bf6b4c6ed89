"""Graceful shutdown that answers: on SIGTERM, requests in flight finish and new ones get 503.

uvicorn's own shutdown closes the listening socket first, so a request that arrives while the
server drains is refused at the connection, which a client or a load balancer cannot tell from a
dead host. Here the drain comes first: `DrainingServer.shutdown` flags the app as draining and
keeps the listener open while the requests in flight finish (at most `shutdown_grace_s`); the
`DrainGate` middleware answers every new request with 503, `Retry-After` and `Connection:
close` meanwhile. Then uvicorn's shutdown runs as before, with what is left of the grace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import uvicorn

log = logging.getLogger(__name__)


class Drain:
    """What the server and the app share about shutting down: the flag, and the requests in
    flight (counted by `DrainGate`; a single event loop updates it, so no lock)."""

    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        self.draining = False
        self.in_flight = 0


class DrainGate:
    """ASGI middleware: counts the requests in flight; while draining, answers new ones with 503
    (OpenAI's error JSON), `Retry-After` and `Connection: close` without running them."""

    def __init__(self, app: Any, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.drain.draining:
            from retlink.serve.app import error_json

            response = error_json(503, "the server is shutting down; retry shortly", "server_error", "shutting_down")
            response.headers["Retry-After"] = str(self.drain.retry_after_s)
            response.headers["Connection"] = "close"
            return await response(scope, receive, send)
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1


class DrainingServer(uvicorn.Server):
    """uvicorn with the drain before its shutdown. The whole shutdown stays within
    `config.timeout_graceful_shutdown`: what the drain uses is taken from uvicorn's own wait."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    async def shutdown(self, sockets: list | None = None) -> None:
        self.drain.draining = True
        grace = self.config.timeout_graceful_shutdown or 0.0
        deadline = time.monotonic() + grace
        if self.drain.in_flight:
            log.info("draining: %d request(s) in flight, new requests get 503", self.drain.in_flight)
        while self.drain.in_flight and not self.force_exit and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # uvicorn then closes the listener and cancels whatever outlives the rest of the grace
        self.config.timeout_graceful_shutdown = max(0.1, deadline - time.monotonic())
        await super().shutdown(sockets)
