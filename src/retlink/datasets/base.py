"""What every MEL dataset loader shares: the sample type, the registry and located validation.

Every loader turns one published format into the same two streams, `Sample`s (a mention in an
image + sentence, with its gold KB entity) and `Entity`s (the KB), so that the eval runner, the
KB builder and the baseline never see a dataset's quirks. Records are validated one by one and a
bad one raises `DatasetError` naming the file and the line it starts on: a user with a
110,000-line file needs to know *where* the record is, and a loader that skipped bad records
silently would quietly change the benchmark.

The published files are mostly single JSON arrays of 100+ MB (MIMIC's `kb_entity.json`,
WikiDiverse's splits), so `iter_json_array` parses them incrementally: memory stays bounded by
one chunk plus one record, and each record comes with the line it starts on.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from retlink.core.errors import ConfigError, DatasetError
from retlink.core.types import NIL, Entity

log = logging.getLogger(__name__)

_WS = " \t\r\n"


class Sample(BaseModel):
    """One linking instance: a mention, the image and sentence it appears in, and its gold entity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    image_path: Path | None = Field(
        description="absolute path of the mention image; None if the record has none"
    )
    mention: str = Field(min_length=1)
    context: str = Field("", description="the sentence or caption the mention appears in")
    gold_id: str = Field(min_length=1, description=f"KB entity id of the answer, or {NIL!r}")
    split: str = Field(min_length=1)
    dataset: str = ""
    #: (x1, y1, x2, y2) of the mention in the image, for visual-mention datasets (WikiPerson).
    bbox: tuple[float, float, float, float] | None = None
    #: where the record came from, "file:line", for error messages downstream.
    source: str = ""


def located(path: Path, line: int | None, message: str) -> DatasetError:
    """A DatasetError whose message starts with `file:line`."""
    where = f"{path}:{line}" if line is not None else str(path)
    return DatasetError(f"{where}: {message}")


def require(
    record: Any, key: str | int, kind: type | tuple[type, ...], path: Path, line: int, *, what: str = "record"
):
    """`record[key]`, checked for presence and type; raises a located DatasetError otherwise."""
    container = dict if isinstance(key, str) else list
    if not isinstance(record, container):
        raise located(
            path,
            line,
            f"{what} must be a JSON {'object' if container is dict else 'array'}, got {type(record).__name__}",
        )
    try:
        value = record[key]
    except (KeyError, IndexError):
        raise located(path, line, f"{what} is missing field {key!r}") from None
    # bool is an int subclass; a boolean where a number or string is due is a type error.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        names = "/".join(k.__name__ for k in _as_tuple(kind))
        raise located(
            path, line, f"{what} field {key!r} must be {names}, got {type(value).__name__} {value!r:.60}"
        )
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def check_image(path: Path, source: Path, line: int, *, strict: bool) -> Path | None:
    """The image path if the file exists; otherwise a located error (strict) or None with a warning.

    Real dump folders always miss some images (dead URLs at crawl time), hence the non-strict mode
    for full-scale runs; tests and small curated sets use strict mode.
    """
    if path.is_file():
        return path
    if strict:
        raise located(source, line, f"image file not found: {path}")
    log.warning("%s:%d: image file not found, using none: %s", source, line, path)
    return None


class _Reader:
    """Incremental UTF-8 text reader that knows the line number of its read position."""

    def __init__(self, path: Path, chunk_size: int) -> None:
        self.path = path
        self.fh = path.open("rb")
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.chunk_size = chunk_size
        self.buf = ""
        self.pos = 0
        self.line = 1  # line number at self.pos
        self.eof = False

    def more(self) -> bool:
        """Append one chunk to the buffer; False at end of file."""
        if self.eof:
            return False
        raw = self.fh.read(self.chunk_size)
        try:
            text = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as e:
            line = self.line + self.buf.count("\n", self.pos) + raw[: e.start].count(b"\n")
            raise located(
                self.path, line, f"not valid UTF-8 ({e.reason} at byte {e.start} of a chunk)"
            ) from None
        if not raw:
            self.eof = True
        if self.pos > len(self.buf) // 2:  # drop what was consumed, keep memory bounded
            self.buf = self.buf[self.pos :]
            self.pos = 0
        self.buf += text
        return bool(raw)

    def advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def skip_ws(self) -> str | None:
        """Skip whitespace; the next character, or None at end of file."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                if self.buf[self.pos] == "\n":
                    self.line += 1
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return None

    def close(self) -> None:
        self.fh.close()


def _could_continue(value: Any, buf: str, end: int) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not buf[end:].strip("0123456789.eE+-")
    )


def iter_json_array(path: Path, *, chunk_size: int = 1 << 20) -> Iterator[tuple[int, Any]]:
    """Stream the elements of a file holding one JSON array, as (line the element starts on, value).

    Malformed JSON and bad UTF-8 raise a DatasetError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise located(path, None, "file not found")
    decoder = json.JSONDecoder()
    reader = _Reader(path, chunk_size)
    try:
        if reader.skip_ws() != "[":
            raise located(path, reader.line, "expected a JSON array ('[') at the start of the file")
        reader.advance(reader.pos + 1)
        first = True
        while True:
            c = reader.skip_ws()
            if c is None:
                raise located(path, reader.line, "file ends inside the JSON array (missing ']')")
            if c == "]":
                return
            if not first:
                if c != ",":
                    raise located(path, reader.line, f"expected ',' or ']' between array elements, got {c!r}")
                reader.advance(reader.pos + 1)
                if reader.skip_ws() is None:
                    raise located(path, reader.line, "file ends inside the JSON array (missing ']')")
            first = False
            start_line = reader.line
            while True:
                try:
                    value, end = decoder.raw_decode(reader.buf, reader.pos)
                except json.JSONDecodeError as e:
                    if reader.more():  # the element may straddle the chunk boundary
                        continue
                    line = reader.line + reader.buf.count("\n", reader.pos, e.pos)
                    raise located(path, line, f"malformed JSON ({e.msg})") from None
                # a number that reaches the end of the buffer may go on in the next chunk
                if _could_continue(value, reader.buf, end) and reader.more():
                    continue
                break
            reader.advance(end)
            yield start_line, value
    finally:
        reader.close()


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Stream (line number, value) from a JSON Lines file; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise located(path, None, "file not found")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise located(path, lineno, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise located(path, lineno, f"malformed JSON ({e.msg}, column {e.colno})") from None


def iter_json_any(path: Path) -> Iterator[tuple[int, Any]]:
    """A JSON array file or a JSON Lines file, told apart by the first non-blank character."""
    path = Path(path)
    if not path.is_file():
        raise located(path, None, "file not found")
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip()
    return iter_json_array(path) if head.startswith(b"[") else iter_jsonl(path)


class MELDataset:
    """Base class of the loaders: a dataset folder read as samples and KB entities.

    Subclasses set `key`, `splits` and implement `_samples(split)` and `entities()`. Both stream
    from disk, so a 110k-entity KB never sits in memory as a list.
    """

    key: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ()

    def __init__(self, root: str | Path, *, strict_images: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"{self.key} dataset folder not found: {self.root}")
        self.strict_images = strict_images

    def samples(self, split: str | None = None) -> Iterator[Sample]:
        """Samples of one split, or of all splits in order when `split` is None."""
        if split is not None and split not in self.splits:
            raise ConfigError(f"{self.key} has no split {split!r}; choose one of {', '.join(self.splits)}")
        for s in [split] if split else self.splits:
            yield from self._samples(s)

    def _samples(self, split: str) -> Iterator[Sample]:
        raise NotImplementedError

    def entities(self) -> Iterator[Entity]:
        """The KB entities, image paths made absolute."""
        raise NotImplementedError

    def entities_from_jsonl(self, path: Path) -> Iterator[Entity]:
        """Entities from retlink's own JSON Lines format, image paths relative to the folder."""
        for line, rec in iter_jsonl(path):
            if not isinstance(rec, dict):
                raise located(path, line, f"entity must be a JSON object, got {type(rec).__name__}")
            rels = rec.get("image_paths", [])
            if not isinstance(rels, list):
                raise located(
                    path, line, f"entity field 'image_paths' must be a list, got {type(rels).__name__}"
                )
            paths = []
            for i, rel in enumerate(rels):
                if not isinstance(rel, str) or not rel:
                    raise located(path, line, f"entity image_paths[{i}] must be a non-empty string")
                found = check_image(self.root / rel, path, line, strict=self.strict_images)
                if found:
                    paths.append(str(found.resolve()))
            yield self.entity({**rec, "image_paths": paths}, path, line)

    def entity(self, record: dict[str, Any], path: Path, line: int) -> Entity:
        """Build an Entity, turning pydantic's complaints into a located error."""
        try:
            return Entity(**record)
        except ValueError as e:
            raise located(
                path, line, f"invalid entity ({e.__class__.__name__}: {str(e).splitlines()[-1].strip()})"
            ) from None


DATASETS: dict[str, type[MELDataset]] = {}


def register(cls: type[MELDataset]) -> type[MELDataset]:
    """Class decorator: make a loader reachable by its key (the name YAML configs use)."""
    if not cls.key:
        raise ValueError(f"{cls.__name__} has no key")
    if cls.key in DATASETS and DATASETS[cls.key] is not cls:
        raise ValueError(f"dataset key {cls.key!r} registered twice")
    DATASETS[cls.key] = cls
    return cls


def load_dataset(key: str, root: str | Path | None = None, **options: Any) -> MELDataset:
    """The loader registered under `key`, opened on `root` (optional for loaders with a default)."""
    try:
        cls = DATASETS[key]
    except KeyError:
        raise ConfigError(f"unknown dataset {key!r}; known: {', '.join(sorted(DATASETS))}") from None
    if root is None:
        try:
            return cls(**options)
        except TypeError:
            raise ConfigError(f"dataset {key!r} needs a root folder") from None
    return cls(root, **options)


def available() -> list[str]:
    """Registered dataset keys."""
    return sorted(DATASETS)
