"""On-disk cache of extracted pages, keyed by normalised URL, with a TTL.

An evaluation run links thousands of samples whose queries repeat; refetching would be slow,
load other people's servers and make runs depend on the web's mood. Entries are the extracted
page (small JSON), written atomically so that parallel writers and a crash never leave a torn
file; a corrupt or expired entry is a miss.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from retlink.tools.atomic import entry_path, read_json_entry, write_json_atomic
from retlink.tools.scrape.extract import Page
from retlink.tools.scrape.urls import normalise_url

log = logging.getLogger(__name__)


class PageCache:
    """`get(url)` / `put(url, page)`; files under `root/ab/abcdef...json`."""

    def __init__(self, root: Path, ttl_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.ttl_s = ttl_s
        self._clock = clock

    def _path(self, url: str) -> Path:
        return entry_path(self.root, normalise_url(url))

    def get(self, url: str) -> Page | None:
        path = self._path(url)
        entry = read_json_entry(path)
        if entry is None:
            return None
        try:
            if self._clock() - float(entry["stored_at"]) > self.ttl_s:
                return None
            return Page.from_dict(entry["page"])
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable cache entry %s: %s", path, e)
            return None

    def put(self, url: str, page: Page) -> None:
        path = self._path(url)
        try:
            write_json_atomic(path, {"stored_at": self._clock(), "page": page.to_dict()})
        except OSError as e:  # a full or read-only disk must not fail the link
            log.warning("cannot write cache entry %s: %s", path, e)
