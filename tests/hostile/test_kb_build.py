"""`kb build --out`: the tool never deletes what it did not create (issue 32, defects 1, 6, 10)."""

from __future__ import annotations

import os

import pytest

from retlink.core.errors import ConfigError
from retlink.core.outdirs import MARKER, swap_into_place, write_marker
from tests.hostile.common import ENTITIES, assert_refused, run_cli


def test_a_folder_that_is_no_kb_is_refused_and_kept(tmp_path):
    notkb = tmp_path / "notkb"
    notkb.mkdir()
    (notkb / "important.txt").write_text("keep")
    old = tmp_path / "notkb.old"
    old.mkdir()
    (old / "also.txt").write_text("keep too")
    assert_refused(run_cli("kb", "build", str(ENTITIES), "--out", str(notkb)), "not a kb folder")
    assert (notkb / "important.txt").read_text() == "keep"
    assert (old / "also.txt").read_text() == "keep too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notkb", "notkb.old"]


def test_a_file_at_out_is_refused_and_kept(tmp_path):
    f = tmp_path / "kb"
    f.write_text("data")
    assert_refused(run_cli("kb", "build", str(ENTITIES), "--out", str(f)), "is a file")
    assert f.read_text() == "data" and not (tmp_path / "kb.old").exists()


@pytest.mark.parametrize("where", ["under_file", "proc", "dot"])
def test_unwritable_out_is_one_line(tmp_path, where):
    (tmp_path / "file").write_text("x")
    (tmp_path / "cwd-file").write_text("x")
    out = {"under_file": str(tmp_path / "file" / "kb"), "proc": "/proc/retlink-kb", "dot": "."}[where]
    assert_refused(run_cli("kb", "build", str(ENTITIES), "--out", out, cwd=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd-file", "file"]


def test_swap_replaces_only_marked_folders_and_never_touches_dot_old(tmp_path):
    path, work = tmp_path / "kb", tmp_path / "kb.partial"
    (tmp_path / "kb.old").mkdir()
    (tmp_path / "kb.old" / "mine.txt").write_text("mine")
    write_marker(work, "kb")
    swap_into_place(work, path, "kb")
    write_marker(work, "kb")
    (work / "new").write_text("2")
    swap_into_place(work, path, "kb")  # replaces the marked folder
    assert (path / "new").read_text() == "2" and (path / MARKER).exists()
    assert (tmp_path / "kb.old" / "mine.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kb", "kb.old"]
    (path / MARKER).unlink()
    write_marker(work, "kb")
    with pytest.raises(ConfigError, match="not a kb folder"):
        swap_into_place(work, path, "kb")
    assert (path / "new").exists() and os.listdir(work)
