"""The MIMIC release format, shared by WikiMEL, RichpediaMEL and the cleaned WikiDiverse.

Source: pengfei-luo/MIMIC (Luo et al., KDD 2023), `codes/utils/dataset.py` and `config/*.yaml`;
the same layout is read by later work (e.g. zhiweihu1103/MEL-M3EL). A dataset folder holds:

- `<PREFIX>_train.json`, `<PREFIX>_dev.json`, `<PREFIX>_test.json`: one JSON array of mention
  records `{"id", "sentence", "mentions", "imgPath", "answer", "entities"?}`; `mentions` is
  URL-quoted (MIMIC unquotes it), `imgPath` is the mention image's original name or "" and
  `answer` a Wikidata QID, or "nil" for mentions without a KB entity (MIMIC drops those);
- `mention_image/`: mention images, all converted to JPEG, named `<stem of imgPath>.jpg`;
- `kb_entity.json`: one JSON array of `{"id": int, "type": "entity", "entity_name", "attr" (or
  "desc"), "image_list": [names]}`; `entity_name` is URL-quoted;
- `kb_image/`: entity images, named as in `image_list`;
- `qid2id.json`: one line, a JSON object mapping QID -> the integer `id` of `kb_entity.json`.

Entities get their QID as id (gold answers are QIDs), so a KB built from `kb_entity.json` links
straight to the answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote

from retlink.core.types import NIL, Entity
from retlink.datasets.base import MELDataset, Sample, check_image, iter_json_array, located, require


class MimicFormatDataset(MELDataset):
    """Loader for a folder in the MIMIC release layout; subclasses name the split files."""

    split_files: ClassVar[dict[str, str]] = {}
    splits: ClassVar[tuple[str, ...]] = ("train", "dev", "test")

    def __init__(self, root: str | Path, *, strict_images: bool = True, include_nil: bool = False) -> None:
        super().__init__(root, strict_images=strict_images)
        #: MIMIC drops mentions whose answer is "nil"; keep them (gold "NIL") with include_nil.
        self.include_nil = include_nil
        self._qid_by_int: dict[int, str] | None = None
        self._known_qids: set[str] | None = None

    # -- id map -------------------------------------------------------------------------
    def _load_qid2id(self) -> None:
        path = self.root / "qid2id.json"
        if not path.is_file():
            raise located(path, None, "file not found (the QID -> entity index map of the MIMIC release)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise located(path, 1, f"not valid UTF-8 ({e.reason})") from None
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as e:
            raise located(path, e.lineno, f"malformed JSON ({e.msg})") from None
        if not isinstance(mapping, dict):
            raise located(path, 1, f"must be a JSON object QID -> int, got {type(mapping).__name__}")
        by_int: dict[int, str] = {}
        for qid, idx in mapping.items():
            if not isinstance(idx, int) or isinstance(idx, bool):
                raise located(path, 1, f"entry {qid!r} must map to an int, got {idx!r:.40}")
            by_int[idx] = qid
        self._qid_by_int, self._known_qids = by_int, set(mapping)

    @property
    def qid_by_int(self) -> dict[int, str]:
        if self._qid_by_int is None:
            self._load_qid2id()
        assert self._qid_by_int is not None
        return self._qid_by_int

    @property
    def known_qids(self) -> set[str]:
        if self._known_qids is None:
            self._load_qid2id()
        assert self._known_qids is not None
        return self._known_qids

    # -- mentions -----------------------------------------------------------------------
    def _samples(self, split: str) -> Iterator[Sample]:
        path = self.root / self.split_files[split]
        for index, (line, rec) in enumerate(iter_json_array(path)):
            answer = require(rec, "answer", str, path, line, what="mention record")
            mention = unquote(require(rec, "mentions", str, path, line, what="mention record")).strip()
            sentence = require(rec, "sentence", str, path, line, what="mention record")
            img = require(rec, "imgPath", str, path, line, what="mention record")
            rid = rec.get("id", index)
            if not isinstance(rid, str | int) or isinstance(rid, bool):
                raise located(
                    path, line, f"mention record field 'id' must be str/int, got {type(rid).__name__}"
                )
            if not mention:
                raise located(path, line, "mention record has an empty 'mentions'")
            if answer.lower() == "nil":
                if not self.include_nil:
                    continue
                answer = NIL
            elif answer not in self.known_qids:
                raise located(path, line, f"answer {answer!r} is not in qid2id.json")
            image = None
            if img:
                # MIMIC converted every mention image to JPEG and kept the stem of imgPath.
                image = check_image(
                    self.root / "mention_image" / (Path(img).stem + ".jpg"),
                    path,
                    line,
                    strict=self.strict_images,
                )
            yield Sample(
                id=f"{self.key}:{split}:{rid}",
                image_path=image.resolve() if image else None,
                mention=mention,
                context=sentence,
                gold_id=answer,
                split=split,
                dataset=self.key,
                source=f"{path}:{line}",
            )

    # -- KB -----------------------------------------------------------------------------
    def entities(self) -> Iterator[Entity]:
        path = self.root / "kb_entity.json"
        images = self.root / "kb_image"
        for line, rec in iter_json_array(path):
            idx = require(rec, "id", int, path, line, what="entity record")
            kind = rec.get("type", "entity")
            if kind != "entity":
                raise located(path, line, f"entity record has type {kind!r}, expected 'entity'")
            name = unquote(require(rec, "entity_name", str, path, line, what="entity record")).strip()
            key = "attr" if "attr" in rec or "desc" not in rec else "desc"
            description = require(rec, key, str, path, line, what="entity record")
            image_list = require(rec, "image_list", list, path, line, what="entity record")
            paths = []
            for i, name_i in enumerate(image_list):
                if not isinstance(name_i, str) or not name_i:
                    raise located(path, line, f"entity record image_list[{i}] must be a non-empty string")
                found = check_image(images / name_i, path, line, strict=self.strict_images)
                if found:
                    paths.append(str(found.resolve()))
            qid = self.qid_by_int.get(idx)
            if qid is None:
                raise located(path, line, f"entity id {idx} has no QID in qid2id.json")
            yield self.entity(
                {"id": qid, "name": name or qid, "description": description, "image_paths": paths}, path, line
            )
