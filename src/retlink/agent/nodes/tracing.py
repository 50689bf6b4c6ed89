"""Shared plumbing for graph nodes: timing and the trace.

A node is a plain function `(state, deps) -> partial state`. `traced` wraps it so that every
node records its wall time, and what it skipped and why, without repeating that code in each.
A node reports a skip or details by returning the reserved keys `_skipped` / `_detail`.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

from retlink.core.types import TraceEvent


def _event(name: str, started: float, update: dict[str, Any]) -> dict[str, Any]:
    skipped = update.pop("_skipped", None)
    detail = update.pop("_detail", {})
    event = TraceEvent(node=name, seconds=round(time.perf_counter() - started, 4), skipped=skipped, detail=detail)
    update["trace"] = [*update.get("trace", []), event]
    return update


def traced(name: str, fn: Callable[..., Any], **deps: Any) -> Callable[..., Any]:
    """Bind a node's dependencies and record its timing in the trace (sync or async nodes)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(state: dict[str, Any]) -> dict[str, Any]:
            started = time.perf_counter()
            return _event(name, started, dict(await fn(state, **deps)))

        return run_async

    @functools.wraps(fn)
    def run(state: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        return _event(name, started, dict(fn(state, **deps)))

    return run
