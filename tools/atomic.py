"""Atomic small-file writes for the on-disk caches (pages, descriptions).

Written to a temporary file in the target's folder and renamed over it, so parallel writers and
a crash never leave a torn file for a reader to trip on.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as JSON at `path` (folders created). Raises OSError; callers decide whether a
    failed cache write matters (it never should fail a link)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
