"""Waiting in tests: the one poll loop for "until this holds" (a server up, a gate empty, a file
grown), so every wait is bounded, says what it waited for, and never hides behind a fixed sleep.
Bounds are far beyond a loaded machine's delays; a condition that can never hold (the server
process died) should raise at once from inside the predicate rather than wait out the bound."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    what: str,
    timeout_s: float = 60.0,
    *,
    interval_s: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail the test (an
    AssertionError naming `what`, plus `detail()` such as a log's tail) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}" + (f": {detail()}" if detail else ""))
        time.sleep(interval_s)
    return result


def answers_200(url: str, proc: subprocess.Popen | None = None, log: Callable[[], str] | None = None) -> Callable[[], bool]:
    """A readiness predicate for `wait_until`: GET `url` answers 200. With `proc`, a server
    process that has exited fails at once (with `log()`), instead of waiting out the bound."""

    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}: {log() if log else ''}")
        try:
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    return up
