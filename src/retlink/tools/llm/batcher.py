"""A micro-batcher: calls that arrive within a few milliseconds run as one batch.

Concurrent links (`link_many`, the eval runner's threads, the chat endpoint's requests) each call
the in-process model. Behind a lock they queue and each pays a full forward pass per token; a
batch of them pays about one, because decoding a 135M model on a CPU is bound by overhead and
memory traffic, not arithmetic. One worker thread owns the model: it takes the first waiting
request, gathers whatever else arrives within `window_s` (up to `max_rows` rows), runs them
together through `run`, and hands each caller its own results (or the batch's exception).

A request is a list of rows (the enhancer sends its candidates as one request); `run` gets the
rows of every request in the batch, in order, and returns one result per row.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Row = TypeVar("Row")
Result = TypeVar("Result")


class MicroBatcher(Generic[Row, Result]):
    """`submit(rows)` blocks until the batch holding them has run; thread-safe."""

    def __init__(
        self,
        run: Callable[[list[Row]], Sequence[Result]],
        *,
        window_s: float = 0.005,
        max_rows: int = 8,
        name: str = "llm-batcher",
    ) -> None:
        self._run = run
        self.window_s = window_s
        self.max_rows = max_rows
        self.name = name
        self._queue: queue.Queue[tuple[list[Row], Future]] = queue.Queue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: sizes (rows) of the batches run so far, for tests and benchmarks
        self.batch_sizes: list[int] = []

    def submit(self, rows: list[Row]) -> list[Result]:
        if not rows:
            return []
        future: Future = Future()
        self._queue.put((list(rows), future))
        self._ensure_worker()
        return future.result()

    def _ensure_worker(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    def _gather(self) -> list[tuple[list[Row], Future]]:
        """The first waiting request and those arriving within the window, up to `max_rows` rows
        (a request is never split; one larger than `max_rows` runs alone)."""
        batch = [self._queue.get()]
        rows = len(batch[0][0])
        deadline = time.monotonic() + self.window_s
        while rows < self.max_rows:
            timeout = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if rows + len(item[0]) > self.max_rows:
                self._queue.put(item)  # too big for this batch: first of a later one (order kept per caller)
                break
            batch.append(item)
            rows += len(item[0])
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._gather()
            rows = [r for req, _ in batch for r in req]
            self.batch_sizes.append(len(rows))
            try:
                results = list(self._run(rows))
                if len(results) != len(rows):
                    raise RuntimeError(f"batch run returned {len(results)} results for {len(rows)} rows")
            except BaseException as e:  # every caller of the batch gets the error; the worker lives on
                for _, future in batch:
                    future.set_exception(e)
                continue
            start = 0
            for req, future in batch:
                future.set_result(results[start : start + len(req)])
                start += len(req)
