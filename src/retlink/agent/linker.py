"""The public face: `Linker.from_config(...)`, `link`, `alink`, `link_many`, `astream`.

The graph runs on one event loop owned by the Linker (a daemon thread), whatever the caller
uses: sync code, its own asyncio loop, or a web server. Shared async clients (search,
scraping, served models) are then always used from the loop that created them, and `link`
works inside Jupyter or a running loop as well as in a plain script.

With a checkpointer configured (`checkpointer:` in the config), every link runs under a LangGraph
thread id (the caller's, or a new one, returned in `LinkResult.thread_id`): its state is saved
after each step, `snapshot(thread_id)` shows it, and `resume(thread_id)` continues a link that
failed from its last saved step, without re-running the steps that finished.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from retlink.agent.backends import Components, build_components
from retlink.agent.config import RetlinkConfig
from retlink.agent.graph import build_graph
from retlink.core.errors import CheckpointError
from retlink.core.types import LinkResult, TraceEvent
from retlink.tools.checkpoint import open_checkpointer
from retlink.tools.images import ImageInput, storable_input

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
            from retlink.core.errors import RetlinkError

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
        self._loop = _LoopThread()
        try:
            # opened on the loop that uses it (an SQLite connection belongs to its loop)
            self.checkpointer, close = self._loop.submit(open_checkpointer(self.config.checkpointer)).result()
        except BaseException:
            self._loop.close()
            raise
        if close is not None:
            self._loop.closers.append(close)
        #: the compiled LangGraph graph, for people who compose their own flows
        self.graph = build_graph(components, checkpointer=self.checkpointer)
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

    def _inputs(self, image: ImageInput, mention: str, context: str | None) -> dict[str, Any]:
        """The graph's input. A checkpointer stores it too, so a PIL image or a tensor is handed
        over as its array then (validated the same way); without one, as given."""
        if self.checkpointer is not None:
            image = storable_input(image)
        return {"image": image, "mention": mention, "context": context or "", "trace": []}

    @staticmethod
    def _result(state: dict[str, Any], thread: dict[str, Any] | None = None) -> LinkResult:
        result: LinkResult = state["result"]
        thread_id = thread["configurable"]["thread_id"] if thread else None
        return result.model_copy(update={"trace": list(state.get("trace", [])), "thread_id": thread_id})

    async def _thread(self, thread_id: str | None, *, new: bool) -> dict[str, Any] | None:
        """The LangGraph run config of a link's thread (None without a checkpointer). A new link
        gets a fresh thread: reusing one would append the new link's evidence and trace to the
        old link's state."""
        if self.checkpointer is None:
            if thread_id is not None:
                raise CheckpointError("a thread id needs a checkpointer: set checkpointer.kind in the config")
            return None
        config = {"configurable": {"thread_id": thread_id or uuid.uuid4().hex}}
        saved = await self.checkpointer.aget_tuple(config)
        if new and saved is not None:
            raise CheckpointError(
                f"thread {thread_id!r} already holds a link: resume it (Linker.resume) or link under a new thread id"
            )
        if not new and saved is None:
            raise CheckpointError(f"no checkpoint for thread {thread_id!r}: nothing to resume")
        return config

    async def _run(
        self, image: ImageInput, mention: str, context: str | None, thread_id: str | None = None
    ) -> LinkResult:
        thread = await self._thread(thread_id, new=True)
        try:
            state = await self.graph.ainvoke(self._inputs(image, mention, context), thread)
        except Exception as e:
            if thread is not None:  # say where the work done so far is saved
                e.add_note(f"retlink: this link's checkpoints are under thread {thread['configurable']['thread_id']!r} "
                           "(Linker.resume continues it)")
            raise
        return self._result(state, thread)

    async def _resume(self, thread_id: str) -> LinkResult:
        thread = await self._thread(thread_id, new=False)
        # input None: LangGraph continues from the thread's last checkpoint, running only the
        # steps that had not finished (a finished link's state comes back as it was)
        state = await self.graph.ainvoke(None, thread)
        return self._result(state, thread)

    def link(
        self, image: ImageInput | None, mention: str = "", context: str | None = None, *, thread_id: str | None = None
    ) -> LinkResult:
        """Link one mention. `image` may be a path, bytes, a PIL image, an array or a tensor, or
        None (a text-only link: captioning and image retrieval are skipped, as the trace says);
        the mention may be empty when an image is given (an image-only link). `thread_id` (with
        a checkpointer only) names the thread the link's checkpoints are saved under."""
        return self._loop.submit(self._run(image, mention, context, thread_id)).result()

    async def alink(
        self, image: ImageInput, mention: str, context: str | None = None, *, thread_id: str | None = None
    ) -> LinkResult:
        """Async `link`, safe to await from any event loop."""
        return await asyncio.wrap_future(self._loop.submit(self._run(image, mention, context, thread_id)))

    def resume(self, thread_id: str) -> LinkResult:
        """Continue the link saved under `thread_id` from its last checkpoint (after a failure, or
        in a new process with the same SQLite checkpointer); the steps that finished are not run
        again. Raises `CheckpointError` when there is no such thread."""
        return self._loop.submit(self._resume(thread_id)).result()

    def snapshot(self, thread_id: str):
        """The saved state of a thread (LangGraph's `StateSnapshot`: `values`, and `next`, the
        steps still to run), to inspect a long or failed link."""
        return self._loop.submit(self._snapshot(thread_id)).result()

    async def _snapshot(self, thread_id: str):
        return await self.graph.aget_state(await self._thread(thread_id, new=False))

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
                thread = await self._thread(None, new=True)
                async for update in self.graph.astream(
                    self._inputs(image, mention, context), thread, stream_mode="updates"
                ):
                    for _node, delta in update.items():
                        for event in (delta or {}).get("trace", []):
                            trace.append(event)
                            caller.call_soon_threadsafe(queue.put_nowait, ("node", event))
                        if delta and "result" in delta:
                            final = delta
                result = self._result({**final, "trace": trace}, thread)
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
