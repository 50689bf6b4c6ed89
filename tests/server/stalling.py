"""Fault injection for the server tests (a fault named as such): linkers whose links report one
node and then stall until released, which is what a slow link looks like to the server, so a
test can abandon requests mid-link deterministically and count what was cancelled. No models
are loaded."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from retlink.core.types import LinkResult, TraceEvent


class StallingLinker:
    """Fault injection: a linker whose links stall after their first node while `stall` is set."""

    def __init__(self) -> None:
        self.stall = True
        self.started = 0
        self.cancelled = 0
        self.lock = threading.Lock()

    async def astream(self, image, mention, context=None):
        with self.lock:
            self.started += 1
        try:
            yield "node", TraceEvent(node="validate", seconds=0.0)
            while self.stall:
                await asyncio.sleep(0.02)
            yield "node", TraceEvent(node="finalize", seconds=0.0)
            yield "result", LinkResult(entity=None, score=0.0, decided_by="nil", mention=mention)
        except asyncio.CancelledError:
            with self.lock:
                self.cancelled += 1
            raise
        except GeneratorExit:
            with self.lock:
                self.cancelled += 1
            raise

    async def alink(self, image, mention, context=None):
        async for kind, item in self.astream(image, mention, context):
            if kind == "result":
                return item
        raise AssertionError("no result")


class FileStallingLinker(StallingLinker):
    """The stalling fault across processes: links stall until the file `release` exists."""

    def __init__(self, release: str) -> None:
        super().__init__()
        self.release = Path(release)

    @property
    def stall(self) -> bool:
        return not self.release.exists()

    @stall.setter
    def stall(self, value: bool) -> None:
        pass
