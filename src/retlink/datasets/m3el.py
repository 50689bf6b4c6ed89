"""M3EL (key "m3el"): Wang et al., "M^3EL: A Multi-task Multi-topic Dataset for Multi-modal
Entity Linking" (arXiv 2410.18096, 2024), ww-ffff/M3EL: 79,625 instances over 9 multi-modal
tasks and 5 topics (movies, ...), each mention with a short list of candidates.

Published record format (README "Data Format", mention level; shown there in Python notation):

    {"Qid": "Q18151305", "name": "Kansas Saloon Smashers",
     "description": "1901 film by Edwin Stanton Porter",
     "sentence": "Kansas Saloon Smashers is a 1901 comedy short film ...",
     "image": ["KansasSaloonSmashers1901.jpg", "https://commons.wikimedia.org/wiki/Special:FilePath/...",
               "/M3EL/movies_candidates_images/Kansas Saloon Smashers-Q18151305/Q18151305.jpg"],
     "candidates": [{"Qid", "name", "description", "image": [file name, URL, local path]}, ...]}

`Qid` is the gold entity, `name` its surface form in `sentence` (the mention) and `image` is
[original file name, URL, path inside the release]. The release path starts with the archive's
top folder (`/M3EL/`), which this loader replaces by the dataset folder. Files: every `*.json`
(one JSON array) or `*.jsonl` in the folder is one split named after its stem (the README does not
fix file names). The KB is the union of all candidates (deduplicated by QID), which is how M3EL
frames linking: pick the right candidate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from retlink.core.types import Entity
from retlink.datasets.base import (
    MELDataset,
    Sample,
    check_image,
    iter_json_any,
    located,
    register,
    require,
)


@register
class M3EL(MELDataset):
    """M3EL: mention-level records with their candidate entities."""

    key = "m3el"

    def __init__(self, root: str | Path, *, strict_images: bool = True) -> None:
        super().__init__(root, strict_images=strict_images)
        files = sorted(p for p in self.root.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
        self._files = {p.stem: p for p in files}
        self.splits = tuple(self._files)

    def _image(self, rec: dict[str, Any], path: Path, line: int, what: str) -> Path | None:
        triple = require(rec, "image", list, path, line, what=what)
        if len(triple) != 3 or not all(isinstance(v, str) for v in triple):
            raise located(
                path, line, f"{what} field 'image' must be [file name, URL, local path] (3 strings)"
            )
        local = PurePosixPath(triple[2])
        parts = local.parts[2:] if local.is_absolute() else local.parts[1:]  # drop "/M3EL"
        if not parts:
            raise located(path, line, f"{what} image path {triple[2]!r} has no file below the release folder")
        found = check_image(self.root.joinpath(*parts), path, line, strict=self.strict_images)
        return found.resolve() if found else None

    def _samples(self, split: str) -> Iterator[Sample]:
        path = self._files[split]
        for index, (line, rec) in enumerate(iter_json_any(path)):
            qid = require(rec, "Qid", str, path, line)
            name = require(rec, "name", str, path, line)
            sentence = require(rec, "sentence", str, path, line)
            require(rec, "description", str, path, line)
            candidates = require(rec, "candidates", list, path, line)
            if not name.strip():
                raise located(path, line, "record has an empty 'name' (the mention)")
            # a candidate's Qid may be anything in a hostile file: compare, never hash it
            if candidates and not any(isinstance(c, dict) and c.get("Qid") == qid for c in candidates):
                raise located(path, line, f"gold Qid {qid!r} is not among the record's candidates")
            yield Sample(
                id=f"{self.key}:{split}:{index}",
                image_path=self._image(rec, path, line, "record"),
                mention=name.strip(),
                context=sentence.strip(),
                gold_id=qid,
                split=split,
                dataset=self.key,
                source=f"{path}:{line}",
            )

    def entities(self) -> Iterator[Entity]:
        seen: set[str] = set()
        for path in self._files.values():
            for line, rec in iter_json_any(path):
                for j, cand in enumerate(require(rec, "candidates", list, path, line)):
                    what = f"candidate {j}"
                    qid = require(cand, "Qid", str, path, line, what=what)
                    name = require(cand, "name", str, path, line, what=what)
                    desc = require(cand, "description", str, path, line, what=what)
                    image = self._image(cand, path, line, what)
                    if qid in seen:
                        continue
                    seen.add(qid)
                    yield self.entity(
                        {
                            "id": qid,
                            "name": name,
                            "description": desc,
                            "image_paths": [str(image)] if image else [],
                        },
                        path,
                        line,
                    )
