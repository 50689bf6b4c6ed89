"""Fuzz every dataset loader's files, and `kb build`'s entities JSONL reader.

Each example takes one text file of a loader's fixture folder (a copy) and mangles it: bytes
truncated, flipped or inserted, or, parsed as JSON / JSON Lines, one value anywhere replaced
by an arbitrary JSON value (wrong types, empty and whitespace strings, huge numbers, nesting).
Then the loader reads everything (`samples()` of every split and `entities()`). The property:
records, or a `RetlinkError` (DatasetError naming file and line, ConfigError); nothing else.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retlink.core.errors import RetlinkError
from retlink.datasets import available, load_dataset
from retlink.tools.kb.build import read_entities

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "datasets"
#: loaders with a fixture folder (wikidiverse-mimic has none yet: it reads the MIMIC files of
#: wikimel/richpediamel's format, fuzzed through those two)
SOURCES = {
    key: path
    for key in available()
    if (path := ROOT / "src" / "retlink" / "data" / "demo" if key == "demo" else FIXTURES / key).is_dir()
}
TEXT = (".json", ".jsonl", ".txt")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.sampled_from(["", "   ", "NIL", "../../etc/passwd", "a\x00b", "é" * 3, "[x]", "Q1"])
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _paths(value, prefix=()):
    """Every path to a value inside a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(doc, path, new):
    if not path:
        return new
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = new
    return doc


@st.composite
def mangled_text(draw, original: bytes) -> bytes:
    if draw(st.booleans()):  # structural: one value replaced
        text = original.decode("utf-8")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:
            whole = json.loads(text)
            paths = list(_paths(whole))
            doc = _replace(whole, draw(st.sampled_from(paths)), draw(json_values))
            return json.dumps(doc).encode()
        except json.JSONDecodeError:
            pass
        if lines:
            i = draw(st.integers(0, len(lines) - 1))
            try:
                doc = json.loads(lines[i])
                lines[i] = json.dumps(_replace(doc, draw(st.sampled_from(list(_paths(doc)))), draw(json_values)))
            except json.JSONDecodeError:
                lines[i] = draw(st.text(max_size=40))
            return ("\n".join(lines) + "\n").encode()
    data = bytearray(original)
    op = draw(st.sampled_from(["truncate", "flip", "insert"]))
    if op == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif op == "flip" and data:
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    else:
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=16) | st.sampled_from([b"\n", b"\xff\xfe", b"[", b"{"]))
    return bytes(data)


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for key, src in SOURCES.items():
        dst = tmp_path_factory.mktemp("ds") / key
        shutil.copytree(src, dst)
        out[key] = dst
    return out


def read_all(key: str, root: Path, strict: bool) -> None:
    ds = load_dataset(key, root, strict_images=strict)
    for sample in ds.samples():
        assert sample.mention and sample.gold_id
    for entity in ds.entities():
        assert entity.id.strip() and entity.name.strip()


@pytest.mark.parametrize("key", sorted(SOURCES))
@given(data=st.data())
def test_loader_files(copies, key, data):
    root = copies[key]
    files = sorted(p for p in root.rglob("*") if p.suffix in TEXT and p.is_file())
    target = data.draw(st.sampled_from(files), label="file")
    original = target.read_bytes()
    target.write_bytes(data.draw(mangled_text(original), label="content"))
    try:
        read_all(key, root, data.draw(st.booleans(), label="strict_images"))
    except RetlinkError:
        pass
    finally:
        target.write_bytes(original)


@given(data=st.data())
def test_entities_jsonl_reader(tmp_path_factory, data):
    original = (SOURCES["demo"] / "entities.jsonl").read_bytes()
    path = tmp_path_factory.mktemp("e") / "entities.jsonl"
    path.write_bytes(data.draw(mangled_text(original)))
    try:
        for entity in read_entities(path):
            assert entity.id.strip() and entity.name.strip()
    except RetlinkError as e:
        assert str(path) in str(e)
