"""WikiPerson (key "wikiperson"): WIKIPerson of Sun et al., "Visual Named Entity Linking: A New
Dataset and A Baseline" (Findings of EMNLP 2022), ict-bigdatalab/VNEL: 48k news images with
person bounding boxes linked to a 120k-entity Wikipedia/Wikidata KB (README table).

Published sample format (`released_data/WIKIPerson_Test.json` in the repository): one JSON array
of `{"id": 0, "image": "462710.jpg", "boundingbox": "[55.47, 15.35, 73.56, 42.03]",
"wikiid": "Q259082"}`; note the box is a *string* holding a JSON list `[x1, y1, x2, y2]`. The
mention is visual (the boxed person), not textual, so samples get the mention "person", an empty
context and the box in `Sample.bbox`. Layout read by this loader:

- `WIKIPerson_Train.json`, `WIKIPerson_Val.json`, `WIKIPerson_Test.json` (only the test file is
  in the repository; the others come with the Kaggle release and are assumed to share its name
  pattern), images in `images/`;
- `kb.jsonl`: the KB. Its Kaggle format is not published in the repository, so this loader takes
  retlink's own entity JSON Lines (`retlink.core.types.Entity`: id = QID, name, aliases, description,
  image_paths relative to the dataset folder); convert the Kaggle KB to it once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import ClassVar

from retlink.core.types import Entity
from retlink.datasets.base import (
    MELDataset,
    Sample,
    check_image,
    iter_json_array,
    located,
    register,
    require,
)

MENTION = "person"


@register
class WikiPerson(MELDataset):
    """WIKIPerson: visual person mentions (bounding boxes) linked to Wikidata QIDs."""

    key = "wikiperson"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    files: ClassVar[dict[str, str]] = {
        "train": "WIKIPerson_Train.json",
        "val": "WIKIPerson_Val.json",
        "test": "WIKIPerson_Test.json",
    }

    def _samples(self, split: str) -> Iterator[Sample]:
        path = self.root / self.files[split]
        for line, rec in iter_json_array(path):
            rid = require(rec, "id", int, path, line)
            image = require(rec, "image", str, path, line)
            box_text = require(rec, "boundingbox", str, path, line)
            qid = require(rec, "wikiid", str, path, line)
            try:
                box = json.loads(box_text)
            except json.JSONDecodeError:
                raise located(path, line, f"boundingbox is not a JSON list: {box_text!r:.60}") from None
            if (
                not isinstance(box, list)
                or len(box) != 4
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
            ):
                raise located(
                    path, line, f"boundingbox must hold 4 numbers [x1, y1, x2, y2], got {box_text!r:.60}"
                )
            if not (box[0] < box[2] and box[1] < box[3]):
                raise located(path, line, f"boundingbox has x2 <= x1 or y2 <= y1: {box}")
            if not qid.startswith("Q"):
                raise located(path, line, f"wikiid must be a Wikidata QID, got {qid!r}")
            found = check_image(self.root / "images" / image, path, line, strict=self.strict_images)
            yield Sample(
                id=f"{self.key}:{split}:{rid}",
                image_path=found.resolve() if found else None,
                mention=MENTION,
                context="",
                gold_id=qid,
                split=split,
                dataset=self.key,
                bbox=tuple(float(v) for v in box),
                source=f"{path}:{line}",
            )

    def entities(self) -> Iterator[Entity]:
        return self.entities_from_jsonl(self.root / "kb.jsonl")
