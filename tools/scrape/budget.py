"""The per-link search budget, shared by the parallel search branches of one link.

The graph fans out one branch per planned query; without a shared budget, five queries of three
results each would fetch fifteen pages and could run for five page timeouts. One Budget object
per link caps pages and wall time across all branches and remembers which URLs and texts were
already taken, so two queries that find the same page fetch it once and cite it once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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

    @classmethod
    def from_config(cls, cfg) -> Budget:
        """A fresh budget from a SearchConfig: `max_pages` pages and `time_budget_s` seconds."""
        return cls(cfg.max_pages, cfg.time_budget_s)

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
