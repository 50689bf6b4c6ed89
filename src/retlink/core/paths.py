"""Where retlink keeps what it makes and fetches: one cache folder, `$RETLINK_CACHE` or
~/.cache/retlink (models, KBs, scraped pages, built datasets); and where the user keeps the
published MEL datasets it cannot make: `$RETLINK_DATA`, which has no default."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """retlink's cache (models, demo KB, scraped pages): $RETLINK_CACHE or ~/.cache/retlink."""
    return Path(os.environ.get("RETLINK_CACHE") or Path.home() / ".cache" / "retlink").expanduser()


DEFAULT_CACHE = cache_dir()


#: the environment variable naming the folder that holds the published MEL datasets (wikimel/,
#: richpediamel/, ...); the bundled configs of those datasets read their `root` under it
DATA_ENV = "RETLINK_DATA"


def data_dir() -> Path | None:
    """The folder `$RETLINK_DATA` names, None when it is unset: datasets retlink cannot build
    have no place it could guess, so a config that needs one says what to set
    (`retlink.core.config.resolve_path`)."""
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None
