"""On-disk cache of KB-only enhanced descriptions: one LLM call per entity, model and prompt.

A description written from an entity's KB entry alone (no web evidence) is the same for every
link that retrieves the entity, so it is generated once and kept on disk, keyed by
(entity id, model, prompt fingerprint): a new KB text, another model or another prompt is a new
key, never a stale hit. Entries are small JSON files written atomically (parallel links and
processes may write the same key; the last identical write wins); an unreadable entry is a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from retlink.tools.atomic import entry_path, read_json_entry, write_json_atomic

log = logging.getLogger(__name__)


def description_key(model: str, entity_id: str, messages: list[dict[str, str]], max_tokens: int) -> str:
    """The identity of one description: the model, the entity and a fingerprint of the exact
    prompt and generation length (the prompt holds the entity's KB text)."""
    fingerprint = hashlib.sha256(json.dumps([messages, max_tokens], sort_keys=True).encode()).hexdigest()[:16]
    return f"{model}|{entity_id}|{fingerprint}"


class DescriptionStore:
    """`get(key)` / `put(key, text)`; files under `root/ab/abcdef...json`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def _path(self, key: str) -> Path:
        return entry_path(self.root, key)

    def get(self, key: str) -> str | None:
        path = self._path(key)
        entry = read_json_entry(path)
        if entry is None:
            return None
        try:
            if entry["key"] != key or not isinstance(entry["text"], str):
                raise ValueError("entry of another key or without text")
            return entry["text"]
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable description cache entry %s: %s", path, e)
            return None

    def put(self, key: str, text: str) -> None:
        path = self._path(key)
        try:
            write_json_atomic(path, {"key": key, "text": text})
        except OSError as e:  # a full or read-only disk must not fail the link
            log.warning("cannot write description cache entry %s: %s", path, e)
