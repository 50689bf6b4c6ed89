"""Regression tests of issue 15 for `kb build`: a `.partial` is resumed only for the same source
and embedders, a resumed build never keeps entities the source no longer has (or their old
versions), a bad entity image is skipped with a warning, and errors name the file's line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from retlink.core.errors import DatasetError
from retlink.core.types import Entity
from retlink.tools.kb.build import build_kb
from retlink.tools.kb.store import KBStore
from tests.hostile.common import bomb_png


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


A = [{"id": "a1", "name": "Alpha"}, {"id": "a2", "name": "Beta"}, {"id": "a3", "name": "Gamma"},
     {"id": "a1", "name": "Alpha again"}]  # line 4 repeats line 1's id: the build stops there
B = [{"id": "a2", "name": "Bravo"}, {"id": "b2", "name": "Delta"}, {"id": "b3", "name": "Echo"}]


def names(kb: Path, text_embedder) -> dict[str, str]:
    store = KBStore(kb, text_embedder, None)
    ids = store._text.get(include=[])["ids"]
    return {e.id: e.name for e in store.get(ids)}


def test_partial_of_another_source_is_discarded_not_merged(tmp_path, text_embedder, caplog):
    out = tmp_path / "kb"
    with pytest.raises(DatasetError, match=r"a\.jsonl: line 4: duplicate entity id 'a1' \(first at line 1\)"):
        build_kb(write_jsonl(tmp_path / "a.jsonl", A), out, text_embedder, None, batch_size=1, progress=False)
    assert (tmp_path / "kb.partial").is_dir()
    with caplog.at_level(logging.WARNING):
        manifest = build_kb(write_jsonl(tmp_path / "b.jsonl", B), out, text_embedder, None, progress=False)
    assert "discarding the unfinished build" in caplog.text and "source_sha256" in caplog.text
    assert manifest["count"] == 3 and manifest["skipped_existing"] == 0
    # before the fix: count 4, and a2 still named "Beta" (A's version) under B's sha256
    assert names(out, text_embedder) == {"a2": "Bravo", "b2": "Delta", "b3": "Echo"}
    store = KBStore(out, text_embedder, None)
    assert store.aliases.lookup("Alpha") == [] and store.aliases.lookup("Beta") == []


def test_same_source_resumes_and_other_embedders_start_over(tmp_path, text_embedder, image_embedder, caplog):
    Image.new("RGB", (32, 32), (200, 0, 0)).save(tmp_path / "red.png")
    rows = [{"id": f"e{i}", "name": f"Entity {i}", "image_paths": ["red.png"]} for i in range(4)]
    src = write_jsonl(tmp_path / "e.jsonl", [*rows, {"id": "e0", "name": "dupe"}])
    out = tmp_path / "kb"

    def attempt(image=image_embedder) -> str:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="retlink.tools.kb.build"):
            return build_kb(src, out, text_embedder, image, batch_size=2, progress=False)

    with pytest.raises(DatasetError, match="line 5"):
        attempt()
    with pytest.raises(DatasetError):  # the very same bytes and embedders: resumed
        attempt()
    assert "resuming the unfinished build" in caplog.text and "discarding" not in caplog.text
    with pytest.raises(DatasetError):  # other embedders: their vectors must not mix
        attempt(image=None)
    assert "discarding the unfinished build" in caplog.text and "image_model differ" in caplog.text
    write_jsonl(src, rows)  # the file fixed: another sha256, so the build starts over
    manifest = attempt()
    assert "discarding" in caplog.text and "source_sha256" in caplog.text
    assert (manifest["count"], manifest["image_count"], manifest["skipped_existing"]) == (4, 4, 0)


class Interrupted(RuntimeError):
    pass


def stop_after(entities: list[Entity], n: int):
    for i, e in enumerate(entities):
        if i == n:
            raise Interrupted
        yield e


def test_resumed_iterable_build_holds_exactly_the_new_source(tmp_path, text_embedder):
    """An iterable has no sha256: the resume checks each stored entity against the source."""
    first = [Entity(id=f"x{i}", name=f"Old {i}", aliases=[f"old alias {i}"]) for i in range(6)]
    out = tmp_path / "kb"
    with pytest.raises(Interrupted):
        build_kb(stop_after(first, 4), out, text_embedder, None, batch_size=2, progress=False)
    second = [first[0], Entity(id="x1", name="New 1"), *first[3:], Entity(id="y", name="Why")]
    manifest = build_kb(second, out, text_embedder, None, batch_size=2, progress=False)
    assert manifest["skipped_existing"] == 2  # x0 and x3, stored exactly as the source has them
    assert names(out, text_embedder) == {"x0": "Old 0", "x1": "New 1", "x3": "Old 3", "x4": "Old 4",
                                         "x5": "Old 5", "y": "Why"}
    store = KBStore(out, text_embedder, None)
    assert store.aliases.lookup("old alias 1") == [] and store.aliases.lookup("Old 2") == []
    assert store.aliases.lookup("old alias 3") == ["x3"]


def test_bomb_entity_image_is_skipped_with_a_warning(tmp_path, text_embedder, image_embedder, caplog):
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    Image.new("RGB", (32, 32), (0, 0, 200)).save(tmp_path / "ok.png")
    src = write_jsonl(tmp_path / "e.jsonl", [{"id": "a", "name": "A", "image_paths": ["bomb.png", "ok.png"]},
                                            {"id": "b", "name": "B", "image_paths": ["bomb.png"]}])
    with caplog.at_level(logging.WARNING):
        manifest = build_kb(src, tmp_path / "kb", text_embedder, image_embedder, progress=False)
    assert (manifest["count"], manifest["image_count"], manifest["missing_images"]) == (2, 1, 2)
    assert "skipping image bomb.png" in caplog.text and "pixels" in caplog.text


def test_cli_kb_build_skips_a_bomb_entity_image(tmp_path):
    from retlink.cli import app

    (tmp_path / "bomb.png").write_bytes(bomb_png())
    src = write_jsonl(tmp_path / "e.jsonl", [{"id": "a", "name": "A", "image_paths": ["bomb.png"]}])
    res = CliRunner().invoke(app, ["kb", "build", str(src), "--out", str(tmp_path / "kb")])
    assert res.exit_code == 0, res.output
    assert "1 entities, 0 images" in " ".join(res.stdout.split())
