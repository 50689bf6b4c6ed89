"""The logos benchmark (key "logos"): brand logos from simple-icons-pack, built by `retlink data build logos`.

A development MEL benchmark that nobody on the project hand-wrote (see `logos_build.py` for the
construction): mentions are title words that several brands share ("Google", "Apache"), so the
alias table cannot decide; the image is another rendering of the logo than the KB's. It is
generated at build time into `$RETLINK_CACHE/data/logos` (the default root) and written in
MIMIC's WikiMEL layout, so the `wikimel` loader reads the same folder unchanged. This loader
differs in one place: the KB comes from the folder's `entities.jsonl` (the same ids, plus the
partial-name aliases that MIMIC's `kb_entity.json` has no field for).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from retlink.core.errors import ConfigError
from retlink.core.paths import cache_dir
from retlink.core.types import Entity
from retlink.datasets.base import register
from retlink.datasets.mimic_format import MimicFormatDataset


def default_root() -> Path:
    """Where `retlink data build logos` writes by default."""
    return cache_dir() / "data" / "logos"


@register
class Logos(MimicFormatDataset):
    """The built logos benchmark (MIMIC WikiMEL layout + entities.jsonl)."""

    key = "logos"
    split_files: ClassVar[dict[str, str]] = {
        "train": "WIKIMEL_train.json",
        "dev": "WIKIMEL_dev.json",
        "test": "WIKIMEL_test.json",
    }

    def __init__(self, root: str | Path | None = None, *, strict_images: bool = True, include_nil: bool = False) -> None:
        root = Path(root).expanduser() if root is not None else default_root()
        if not (root / "qid2id.json").is_file():
            raise ConfigError(f"the logos benchmark is not built in {root}: run `retlink data build logos --out {root}`")
        super().__init__(root, strict_images=strict_images, include_nil=include_nil)

    def entities(self) -> Iterator[Entity]:
        return self.entities_from_jsonl(self.root / "entities.jsonl")
