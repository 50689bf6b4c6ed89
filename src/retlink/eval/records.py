"""The run's per-link records: one JSON line per (sample, pipeline, setting, attack), durable.

Why a JSONL log and not a database: it is the artefact people share and grep, `report` rebuilds
everything from it alone, and append + flush + fsync of one line is atomic enough for resuming.
A crash can at worst leave a torn last line (no newline): `RecordLog` cuts it off before the next
append, so a resumed run never glues a new record onto half an old one, and the key of the torn
record is simply run again. Reading keeps the last record of each key, so nothing counts twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retlink.core.errors import ConfigError

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
#: a run folder's metadata: its config and fingerprint (eval and MATE runs alike)
RUN_META = "run.json"


def read_meta(run_dir: Path, what: str = "run", command: str = "retlink eval run CONFIG") -> dict[str, Any]:
    """The metadata of an existing run folder (for its report); ConfigError if it is none."""
    path = run_dir / RUN_META
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a {what} folder (no {RUN_META}); run `{command}` first")
    return json.loads(path.read_text())


def resume_meta(run_dir: Path, fingerprint: str) -> dict[str, Any]:
    """The metadata a run folder holds so far ({} for a new one); a ConfigError when it holds a
    run of another config, so a resumed run never mixes the records of two experiments."""
    path = run_dir / RUN_META
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    if old.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"{run_dir} holds a run of a different config (fingerprint {old.get('fingerprint')} != "
            f"{fingerprint}); pick another --out or delete the folder"
        )
    return old


def write_meta(run_dir: Path, config: Any, old: dict[str, Any], **extra: Any) -> None:
    """Write the folder's metadata (name, fingerprint, first creation time, the config and
    `extra`) in one rename, so a kill never leaves half of it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": config.name,
        "fingerprint": config.fingerprint(),
        "created": old.get("created") or datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.model_dump(mode="json"),
        **extra,
    }
    tmp = (run_dir / RUN_META).with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(run_dir / RUN_META)


def record_key(sample_id: str, pipeline: str, setting: str, attack: str) -> str:
    """The identity of one link in a run."""
    return f"{sample_id}|{pipeline}|{setting}|{attack}"


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, raw line, ends with newline) of a file."""
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            yield n, raw, raw.endswith(b"\n")


def read_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """Records by key, the last one of each key winning; a torn or malformed line is skipped
    with a warning (a torn last line is what a kill mid-write leaves)."""
    path = Path(path)
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for n, raw, complete in _lines(path):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            key = rec["key"]
        except (ValueError, KeyError, TypeError):
            what = "torn last line" if not complete else "malformed line"
            log.warning("%s:%d: %s skipped", path, n, what)
            continue
        if not complete:
            log.warning("%s:%d: last line has no newline (interrupted write); kept, it parses", path, n)
        out[key] = rec
    return out


class RecordLog:
    """Append-only writer of records; one writer per run (the runner's main thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._fh = self.path.open("ab")

    def _repair_tail(self) -> None:
        """Cut a torn last line so the next append starts on a line of its own."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return
            # find the last newline; everything after it is the torn record
            pos = size
            block = 4096
            while pos > 0:
                start = max(0, pos - block)
                fh.seek(start)
                chunk = fh.read(pos - start)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    cut = start + i + 1
                    break
                pos = start
            else:
                cut = 0
            log.warning("%s: cutting a torn last record (%d bytes)", self.path, size - cut)
            fh.truncate(cut)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line and make it durable before returning."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
        self._fh.write(line.encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
