"""Benchmarks retlink builds itself (`retlink data build NAME`): one loader shape for all of them.

A built benchmark (logos, icons) is written in MIMIC's WikiMEL layout, so the `wikimel` loader
reads the same folder unchanged; these loaders differ in one place: the KB comes from the folder's
`entities.jsonl` (the same ids, plus the partial-name aliases that MIMIC's `kb_entity.json` has no
field for). The default root is where the build writes, `$RETLINK_CACHE/data/NAME`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from retlink.core.errors import ConfigError
from retlink.core.paths import cache_dir
from retlink.core.types import Entity
from retlink.datasets.mimic_format import MimicFormatDataset


def default_root(key: str) -> Path:
    """Where `retlink data build KEY` writes by default."""
    return cache_dir() / "data" / key


class BuiltBenchmark(MimicFormatDataset):
    """A benchmark built by `retlink data build KEY` (MIMIC WikiMEL layout + entities.jsonl)."""

    split_files: ClassVar[dict[str, str]] = {
        "train": "WIKIMEL_train.json",
        "dev": "WIKIMEL_dev.json",
        "test": "WIKIMEL_test.json",
    }

    def __init__(self, root: str | Path | None = None, *, strict_images: bool = True, include_nil: bool = False) -> None:
        root = Path(root).expanduser() if root is not None else default_root(self.key)
        if not (root / "qid2id.json").is_file():
            raise ConfigError(f"the {self.key} benchmark is not built in {root}: run `retlink data build {self.key} --out {root}`")
        super().__init__(root, strict_images=strict_images, include_nil=include_nil)

    def entities(self) -> Iterator[Entity]:
        return self.entities_from_jsonl(self.root / "entities.jsonl")
