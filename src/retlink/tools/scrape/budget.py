"""The per-link search budget, shared by the parallel search branches of one link.

The graph fans out one branch per planned query; without a shared budget, five queries of three
results each would fetch fifteen pages and could run for five page timeouts. One Budget object
per link caps pages and wall time across all branches and remembers which URLs and texts were
already taken, so two queries that find the same page fetch it once and cite it once.

The graph's state never holds a Budget (it holds a lock, which a checkpointer cannot store): it
carries a `BudgetSpec` (an id and the limits, plain data), which the search node resolves here to
the one live Budget of that id.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import TypedDict

from retlink.tools.lru import LRU


class Budget:
    """Pages and seconds left for one link, plus the URLs and content hashes already used.

    Thread-safe: LangGraph may run sync branches in threads; async branches share one loop.
    """

    def __init__(
        self,
        max_pages: int | None = None,
        seconds: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_pages = max_pages
        self.seconds = seconds
        self._clock = clock
        self._deadline = None if seconds is None else clock() + seconds
        self._lock = threading.Lock()
        self._pages = 0
        self._urls: set[str] = set()
        self._hashes: set[str] = set()

    @property
    def pages_used(self) -> int:
        return self._pages

    def remaining_s(self) -> float | None:
        """Seconds left (never negative), or None when time is unlimited."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._clock())

    @property
    def expired(self) -> bool:
        left = self.remaining_s()
        return left is not None and left <= 0

    def take_page(self) -> bool:
        """Claim one page; False when the page budget is spent."""
        with self._lock:
            if self.max_pages is not None and self._pages >= self.max_pages:
                return False
            self._pages += 1
            return True

    def first_url(self, normalised_url: str) -> bool:
        """True the first time a (normalised) URL is offered in this link, False afterwards."""
        return self._first(self._urls, normalised_url)

    def first_content(self, content_hash: str) -> bool:
        """True the first time a text (by hash) is offered in this link, False afterwards."""
        return self._first(self._hashes, content_hash)

    def _first(self, seen: set[str], key: str) -> bool:
        with self._lock:
            if key in seen:
                return False
            seen.add(key)
            return True


class BudgetSpec(TypedDict):
    """What the graph's state carries for a link's search budget: plain data, so LangGraph's
    checkpointers and its server can store a `Send` holding it (a `Budget` holds a lock, which
    neither msgpack nor pickle can store). Every branch that resolves the same `id` in this
    process shares one `Budget`; see `resolve_budget`."""

    id: str
    max_pages: int | None
    seconds: float | None


def new_budget_spec(cfg) -> BudgetSpec:
    """A fresh budget's spec from a SearchConfig (`max_pages` pages, `time_budget_s` seconds)."""
    return {"id": uuid.uuid4().hex, "max_pages": cfg.max_pages, "seconds": cfg.time_budget_s}


class BudgetRegistry:
    """The live `Budget` behind each spec id, created when the first branch resolves it.

    Bounded (least recently used dropped first) so finished links' budgets do not pile up; a
    link's branches run in one superstep, so its budget is in use while they run. A link resumed
    from a checkpoint in a new process resolves its spec afresh: the branches that still have to
    run get a full budget (the ones that finished are not re-run).
    """

    def __init__(self, maxsize: int = 4096) -> None:
        self._budgets: LRU[str, Budget] = LRU(maxsize)
        self._lock = threading.Lock()

    def resolve(self, spec: BudgetSpec) -> Budget:
        with self._lock:
            budget = self._budgets.get(spec["id"])
            if budget is None:
                budget = Budget(spec["max_pages"], spec["seconds"])
                self._budgets.put(spec["id"], budget)
            return budget


_registry = BudgetRegistry()


def resolve_budget(spec: BudgetSpec) -> Budget:
    """The shared `Budget` of a spec (this process's registry)."""
    return _registry.resolve(spec)
