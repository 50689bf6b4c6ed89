"""The public face: `Linker.from_config(...)`, `link`, `alink`, `link_many`, `astream`.

The graph runs on one event loop owned by the Linker (a daemon thread), whatever the caller
uses: sync code, its own asyncio loop, or a web server. Shared async clients (search,
scraping, served models) are then always used from the loop that created them, and `link`
works inside Jupyter or a running loop as well as in a plain script.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from retlink.backends import Components, build_components
from retlink.config import RetlinkConfig
from retlink.graphs.linking import build_graph
from retlink.tools.images import ImageInput
from retlink.types import LinkResult, TraceEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One input for `link_many`."""

    image: ImageInput
    mention: str
    context: str | None = None


class _LoopThread:
    """A private asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        #: async close callbacks run on the loop by `close` (the scraper's HTTP clients)
        self.closers: list = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="retlink-loop", daemon=True)
        self._thread.start()

    def submit(self, coro) -> Future:
        if self.loop.is_closed():
            from retlink.errors import RetlinkError

            coro.close()  # never to run: closed here, so it is not reported as never awaited
            raise RetlinkError("this Linker is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self, timeout_s: float = 10.0) -> None:
        """Cancel what still runs on the loop, close the scraper's clients, stop the thread."""
        if self.loop.is_closed():
            return

        async def shutdown(aclose) -> None:
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for close in aclose:
                try:
                    await close()
                except Exception:  # closing is best effort: log, never raise
                    log.warning("closing %r failed", close, exc_info=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(self.closers), self.loop).result(timeout_s)
        except Exception:
            log.warning("the linker's loop did not shut down cleanly", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()


class Linker:
    """Links the entity in an image plus mention to the knowledge base."""

    def __init__(self, components: Components) -> None:
        self.components = components
        self.config: RetlinkConfig = components.config
        #: the compiled LangGraph graph, for people who compose their own flows
        self.graph = build_graph(components)
        self._loop = _LoopThread()
        scraper = getattr(components, "scraper", None)
        if scraper is not None:
            self._loop.closers.append(scraper.aclose)

    def close(self) -> None:
        """Stop the Linker's loop thread: links still running are cancelled, its HTTP clients
        closed. Later calls raise `RetlinkError`. Shared models stay loaded for other Linkers."""
        self._loop.close()

    def __enter__(self) -> Linker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_config(cls, source: str | dict | RetlinkConfig | None = None) -> Linker:
        """Build from a YAML path, a preset name ("default", "vllm"), a dict, or None (the default)."""
        return cls(build_components(source))

    @staticmethod
    def _inputs(image: ImageInput, mention: str, context: str | None) -> dict[str, Any]:
        return {"image": image, "mention": mention, "context": context or "", "trace": []}

    @staticmethod
    def _result(state: dict[str, Any]) -> LinkResult:
        result: LinkResult = state["result"]
        return result.model_copy(update={"trace": list(state.get("trace", []))})

    async def _run(self, image: ImageInput, mention: str, context: str | None) -> LinkResult:
        state = await self.graph.ainvoke(self._inputs(image, mention, context))
        return self._result(state)

    def link(self, image: ImageInput | None, mention: str = "", context: str | None = None) -> LinkResult:
        """Link one mention. `image` may be a path, bytes, a PIL image, an array or a tensor, or
        None (a text-only link: captioning and image retrieval are skipped, as the trace says);
        the mention may be empty when an image is given (an image-only link)."""
        return self._loop.submit(self._run(image, mention, context)).result()

    async def alink(self, image: ImageInput, mention: str, context: str | None = None) -> LinkResult:
        """Async `link`, safe to await from any event loop."""
        return await asyncio.wrap_future(self._loop.submit(self._run(image, mention, context)))

    def link_many(
        self,
        samples: Iterable[Sample | tuple | dict],
        concurrency: int = 4,
        *,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> list[LinkResult | BaseException]:
        """Link many samples with at most `concurrency` in flight; results keep the input order.

        With `return_exceptions`, a sample that fails yields its exception instead of
        aborting the batch.
        """
        items = [_as_sample(s) for s in samples]
        sem = asyncio.Semaphore(max(1, concurrency))  # bound to the private loop on first use

        async def one(s: Sample) -> LinkResult:
            async with sem:
                return await self._run(s.image, s.mention, s.context)

        async def run_all(tick) -> list[Any]:
            async def tracked(s: Sample):
                try:
                    return await one(s)
                finally:
                    tick()

            return await asyncio.gather(*(tracked(s) for s in items), return_exceptions=return_exceptions)

        if not progress:
            return self._loop.submit(run_all(lambda: None)).result()
        from rich.progress import Progress

        with Progress() as bar:
            task = bar.add_task("linking", total=len(items))
            return self._loop.submit(run_all(lambda: bar.advance(task))).result()

    async def astream(
        self, image: ImageInput, mention: str, context: str | None = None
    ) -> AsyncIterator[tuple[str, TraceEvent | LinkResult]]:
        """Yield ("node", TraceEvent) as each graph node completes, then ("result", LinkResult)."""
        queue: asyncio.Queue = asyncio.Queue()
        caller = asyncio.get_running_loop()
        done = object()

        async def produce() -> None:
            trace: list[TraceEvent] = []
            final: dict[str, Any] = {}
            try:
                async for update in self.graph.astream(self._inputs(image, mention, context), stream_mode="updates"):
                    for _node, delta in update.items():
                        for event in (delta or {}).get("trace", []):
                            trace.append(event)
                            caller.call_soon_threadsafe(queue.put_nowait, ("node", event))
                        if delta and "result" in delta:
                            final = delta
                result = final["result"].model_copy(update={"trace": trace})
                caller.call_soon_threadsafe(queue.put_nowait, ("result", result))
            except BaseException as e:  # delivered to the consumer, re-raised there
                caller.call_soon_threadsafe(queue.put_nowait, ("error", e))
            finally:
                caller.call_soon_threadsafe(queue.put_nowait, done)

        future = self._loop.submit(produce())
        try:
            while (item := await queue.get()) is not done:
                if item[0] == "error":
                    raise item[1]
                yield item
        finally:
            future.cancel()


def _as_sample(s: Sample | tuple | dict) -> Sample:
    if isinstance(s, Sample):
        return s
    if isinstance(s, dict):
        return Sample(image=s["image"], mention=s["mention"], context=s.get("context"))
    if isinstance(s, Sequence):
        return Sample(*s)
    raise TypeError(f"cannot make a Sample from {type(s).__name__}")
