"""The demo set (key "demo"): retlink's own small offline benchmark in `src/retlink/data/demo/`.

`examples.jsonl`: one JSON object a line, `{"id", "image", "mention", "context", "gold"}`, the
image path relative to the folder and the mention marked in the context with brackets;
`entities.jsonl`: one `retlink.core.types.Entity` a line, image paths relative to the folder. Built
from scikit-image's sample photos, so it runs anywhere without downloads. One split, "test".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from retlink.core.types import Entity
from retlink.datasets.base import MELDataset, Sample, check_image, iter_jsonl, located, register, require

#: the demo data shipped in the repository
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "data" / "demo"


@register
class Demo(MELDataset):
    """retlink's demo examples and KB."""

    key = "demo"
    splits: ClassVar[tuple[str, ...]] = ("test",)

    def __init__(self, root: str | Path = DEFAULT_ROOT, *, strict_images: bool = True) -> None:
        super().__init__(root, strict_images=strict_images)

    def _samples(self, split: str) -> Iterator[Sample]:
        path = self.root / "examples.jsonl"
        for line, rec in iter_jsonl(path):
            rid = require(rec, "id", str, path, line)
            image = require(rec, "image", str, path, line)
            mention = require(rec, "mention", str, path, line)
            context = require(rec, "context", str, path, line)
            gold = require(rec, "gold", str, path, line)
            if not mention.strip():
                raise located(path, line, "empty mention")
            found = check_image(self.root / image, path, line, strict=self.strict_images)
            yield Sample(
                id=f"{self.key}:{rid}",
                image_path=found.resolve() if found else None,
                mention=mention.strip(),
                context=context,
                gold_id=gold,
                split=split,
                dataset=self.key,
                source=f"{path}:{line}",
            )

    def entities(self) -> Iterator[Entity]:
        return self.entities_from_jsonl(self.root / "entities.jsonl")
