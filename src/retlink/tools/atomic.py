"""Small files of the on-disk caches (pages, descriptions, paraphrases, corpus vectors): atomic
writes and tolerant reads.

Written to a temporary file in the target's folder and renamed over it, so parallel writers and
a crash never leave a torn file for a reader to trip on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temporary file in `path`'s folder (folders created), then rename it over
    `path`. Raises OSError; callers decide whether a failed cache write matters."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as JSON at `path` (`write_atomic`). Raises OSError; callers decide whether a
    failed cache write matters (it never should fail a link)."""
    write_atomic(path, lambda fh: fh.write(json.dumps(obj, ensure_ascii=False).encode("utf-8")))


def read_json_entry(path: Path) -> Any | None:
    """The JSON at `path`, or None when it is missing or unreadable (logged): a cache entry that
    cannot be read is a miss, never a failure."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable cache entry %s: %s", path, e)
        return None


def entry_path(root: Path, key: str) -> Path:
    """Where a cache keeps the entry of `key`: `root/ab/abcdef....json` (sha256 of the key,
    sharded by its first two hex digits so no folder grows huge)."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return root / digest[:2] / f"{digest}.json"
