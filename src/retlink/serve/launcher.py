"""Run the endpoint (vLLM's `launcher.py`): the settings from `retlink serve`'s options, uvicorn,
the signals, and a graceful shutdown that answers.

On SIGTERM or SIGINT the drain comes first: `DrainingServer.shutdown` flags the app as draining
(new requests get 503 from `retlink.serve.middleware.DrainGate`) and keeps the listener open
while the requests in flight finish (at most `shutdown_grace_s`); then uvicorn's own shutdown
runs with what is left of the grace and cancels whatever still runs (streams are cut, their
links cancelled). A SIGTERM then ends the process with status 0.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import time
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from retlink.core.config import validation_lines
from retlink.core.errors import ConfigError
from retlink.serve.app import create_app
from retlink.serve.middleware import Drain
from retlink.serve.service import ServerSettings

log = logging.getLogger(__name__)

#: `retlink serve`'s option for each setting it sets, for error lines that name what was typed
OPTION_NAMES = {"host": "--host", "port": "--port", "api_key": "--api-key",
                "max_concurrent_requests": "--max-concurrent", "keep_alive_s": "--keep-alive"}


def server_settings(options: dict[str, Any]) -> ServerSettings:
    """ServerSettings from `retlink serve`'s options, or a ConfigError of one line naming each bad
    option (`--port 99999` used to be logged as given while uvicorn bound a random port)."""
    try:
        return ServerSettings.model_validate(options)
    except ValidationError as e:
        problems = []
        for loc, msg in validation_lines(e):
            name = OPTION_NAMES.get(str(loc[0]), ".".join(map(str, loc))) if loc else "options"
            problems.append(f"{name}: {msg.removeprefix('Value error, ')}")
        raise ConfigError("retlink serve: " + "; ".join(problems)) from None


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server to this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(settings: ServerSettings) -> str | None:
    """The warning for a bind that serves other machines without a key (nothing is refused:
    behind a reverse proxy that authenticates, that is a fair setup)."""
    if settings.api_key is None and not is_loopback(settings.host):
        return (f"serving on {settings.host}:{settings.port} without an API key: anyone who can reach it may "
                "use it (set --api-key or RETLINK_API_KEY, or bind 127.0.0.1)")
    return None


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


def uvicorn_config(app: Any, settings: ServerSettings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration for `app` under `settings`: the one place that maps the server
    settings onto uvicorn (`serve` and the test servers both use it). `overrides` are uvicorn
    options (e.g. a test's ephemeral port or quieter log level)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "timeout_keep_alive": settings.keep_alive_s,
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
        "access_log": False,  # `RequestLog` writes one structured line per request instead
        "log_level": "info",
    }
    return uvicorn.Config(app, **{**options, **overrides})


def run_app(app: FastAPI, settings: ServerSettings) -> None:
    """Serve `app` with uvicorn until SIGTERM or SIGINT, draining first (see the module's
    docstring). uvicorn re-raises the signal it caught: the handler installed here turns a
    SIGTERM into a clean exit rather than death by signal. The linker is closed last."""

    def terminated(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        DrainingServer(uvicorn_config(app, settings), app.state.drain).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        linker = app.state.service.holder.linker
        if linker is not None and hasattr(linker, "close"):
            linker.close()


def serve(config: Any = None, settings: ServerSettings | None = None) -> None:
    """Run the endpoint with uvicorn (what `retlink serve` calls); the linker loads after bind."""
    from retlink.agent.linker import Linker

    settings = settings or ServerSettings()
    warning = bind_warning(settings)
    if warning:
        log.warning(warning)
    run_app(create_app(lambda: Linker.from_config(config), settings), settings)


__all__ = ["DrainingServer", "bind_warning", "is_loopback", "run_app", "serve", "server_settings", "uvicorn_config"]
