"""The incremental JSON-array reader behind the loaders: same values as json.load at any chunk
size, the right start line for every element, and located errors."""

from __future__ import annotations

import json

import pytest

from retlink.core.errors import DatasetError
from retlink.datasets.base import iter_json_any, iter_json_array

RECORDS = [{"a": 1, "s": "x" * 30}, [1, 2.5, None], "é ünïcode ✓", 12345678901234567890, {"nested": {"k": [True, False]}}, 7]


def write_pretty(path, records):
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_values_and_lines_match_json_load_at_any_chunk_size(tmp_path, chunk):
    path = tmp_path / "a.json"
    write_pretty(path, RECORDS)
    got = list(iter_json_array(path, chunk_size=chunk))
    assert [v for _, v in got] == json.loads(path.read_text(encoding="utf-8"))
    lines = path.read_text(encoding="utf-8").split("\n")
    for line, value in got:  # each element's first token is on the reported line
        first = json.dumps(value, ensure_ascii=False, indent=2).split("\n")[0]
        assert lines[line - 1].strip().startswith(first.rstrip(","))


def test_empty_array_and_jsonl_detection(tmp_path):
    (tmp_path / "e.json").write_text(" [ ] ")
    assert list(iter_json_array(tmp_path / "e.json")) == []
    (tmp_path / "l.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n')
    assert list(iter_json_any(tmp_path / "l.jsonl")) == [(1, {"a": 1}), (3, {"a": 2})]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('[\n{"a": 1},\n{"a": }\n]', 3, "malformed JSON"),
        ('[\n{"a": 1}\n{"a": 2}\n]', 3, "expected ',' or ']'"),
        ('[\n{"a": 1},\n', 3, "missing ']'"),
        ('{"a": 1}', 1, "expected a JSON array"),
    ],
)
def test_errors_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DatasetError) as err:
        list(iter_json_array(path, chunk_size=4))
    assert f"{path}:{line}:" in str(err.value) and message in str(err.value)


def test_bad_utf8_is_located(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'[\n{"a": "ok"},\n{"a": "\xff"}\n]')
    with pytest.raises(DatasetError, match=r"bad.json:3: not valid UTF-8"):
        list(iter_json_array(path, chunk_size=5))
