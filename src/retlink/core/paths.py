"""Where retlink keeps what it makes and fetches: one cache folder, `$RETLINK_CACHE` or
~/.cache/retlink (models, KBs, scraped pages, built datasets)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """retlink's cache (models, demo KB, scraped pages): $RETLINK_CACHE or ~/.cache/retlink."""
    return Path(os.environ.get("RETLINK_CACHE") or Path.home() / ".cache" / "retlink").expanduser()


DEFAULT_CACHE = cache_dir()
