"""The logos benchmark builder (`retlink data build logos`) on a small subset: real simple-icons-pack
data, real cairosvg rendering, read back by the real loaders.

What must hold for the benchmark to mean anything: the files are valid MIMIC files the loaders
read; the same seed gives the same bytes; every test mention is ambiguous in the KB; the test
golds were never golds in training; a mention image is another picture than its KB image; and
no sentence names the entity.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from retlink.cli import app
from retlink.core.errors import ConfigError
from retlink.core.types import NIL
from retlink.datasets import load_dataset
from retlink.datasets.build.common import SPLITS, committed_view, compare_manifests
from retlink.datasets.build.logos import (
    COMMITTED_MANIFEST,
    STOP_WORDS,
    build,
    colour_name,
    library_versions,
    mention_key,
    title_words,
)
from retlink.tools.kb.store import normalise_name
from tests.conftest import skip_or_fail

SMALL = {"seed": 3, "samples": 40, "distractors": 8, "limit": 5, "nil_share": 0.2}
#: mean absolute pixel difference (0..1) a mention image keeps from its KB image, at least
PIXEL_FLOOR = 0.08


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("logos") / "logos"
    return out, build(out, progress=False, **SMALL)


def test_small_build_is_valid_mimic_that_both_loaders_read(small):
    root, manifest = small
    for key in ("logos", "wikimel"):
        ds = load_dataset(key, root)
        counts = {s: sum(1 for _ in ds.samples(s)) for s in SPLITS}
        c = manifest["counts"]
        assert counts == {s: c["samples"][s] - c["nil_samples"][s] for s in SPLITS}
        entities = {e.id: e for e in ds.entities()}
        assert len(entities) == manifest["counts"]["entities"]
        for sample in ds.samples():
            assert sample.gold_id in entities and sample.image_path.is_file()
            assert sample.mention in sample.context
        assert all(Path(p).is_file() for e in entities.values() for p in e.image_paths)
    # the logos loader reads entities.jsonl: same ids and descriptions, plus the aliases
    mimic = {e.id: e for e in load_dataset("wikimel", root).entities()}
    logos = {e.id: e for e in load_dataset("logos", root).entities()}
    assert mimic.keys() == logos.keys()
    assert all(mimic[i].description == logos[i].description and mimic[i].name == logos[i].name for i in mimic)
    assert any(e.aliases for e in logos.values())
    assert sum(manifest["counts"]["samples"].values()) == SMALL["samples"]
    # NIL samples (gold left out of the KB) come back with include_nil, and only then
    nil = [s for s in load_dataset("logos", root, include_nil=True).samples() if s.gold_id == NIL]
    assert len(nil) == sum(manifest["counts"]["nil_samples"].values()) > 0
    assert manifest["counts"]["nil_entities"] >= 1


def test_same_seed_same_bytes_other_seed_other_bytes(small, tmp_path):
    _, first = small
    again = build(tmp_path / "again", progress=False, **SMALL)
    assert again["files"] == first["files"] and again["digests"] == first["digests"]
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["digests"] == first["digests"]
    other = build(tmp_path / "other", progress=False, **{**SMALL, "seed": 4})
    assert other["digests"]["all"] != first["digests"]["all"]
    assert compare_manifests(committed_view(other), committed_view(first))  # the check names differences


def test_every_test_mention_is_shared_by_several_kb_entities(small):
    root, _ = small
    ds = load_dataset("logos", root)
    entities = list(ds.entities())
    by_word: dict[str, set[str]] = {}
    by_alias: dict[str, set[str]] = {}
    for e in entities:
        for w in title_words(e.name):
            by_word.setdefault(mention_key(w), set()).add(e.id)
        for n in [e.name, *e.aliases]:
            by_alias.setdefault(normalise_name(n), set()).add(e.id)
    test = list(load_dataset("logos", root, include_nil=True).samples("test"))
    assert test
    for s in test:
        assert len(by_word[mention_key(s.mention)]) >= 2, s
        assert s.gold_id == NIL or s.gold_id in by_word[mention_key(s.mention)]
        # the alias table returns all of them: it cannot decide
        assert len(by_alias[normalise_name(s.mention)]) >= 2, s


def test_split_by_entity(small):
    root, _ = small
    ds = load_dataset("logos", root)
    golds = {split: {s.gold_id for s in ds.samples(split)} for split in SPLITS}
    assert golds["test"] and golds["train"]
    assert not golds["test"] & golds["train"] and not golds["test"] & golds["dev"]


def test_mention_images_differ_from_kb_images(small):
    root, _ = small
    ds = load_dataset("logos", root)
    kb_image = {e.id: e.image_paths[0] for e in ds.entities()}

    def pixels(path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("RGB").resize((224, 224)), dtype=np.float32) / 255

    distances = [float(np.abs(pixels(s.image_path) - pixels(kb_image[s.gold_id])).mean()) for s in ds.samples()]
    assert min(distances) > PIXEL_FLOOR, sorted(distances)[:5]


def test_sentences_do_not_name_the_entity(small):
    root, _ = small
    ds = load_dataset("logos", root)
    names = {e.id: e.name for e in ds.entities()}
    for s in ds.samples():
        others = {mention_key(w) for w in title_words(names[s.gold_id])} - {mention_key(s.mention)}
        words = {mention_key(w) for w in title_words(s.context)}
        assert not {w for w in others if len(w) >= 3 and w not in STOP_WORDS} & words, (s.context, names[s.gold_id])
        assert s.gold_id.lower() not in s.context.lower().replace(s.mention.lower(), "")


def test_colour_names():
    assert [colour_name(h) for h in ("4285F4", "E30E17", "000000", "FFFFFF", "808080", "34A853", "FF9900")] == [
        "blue", "red", "black", "white", "grey", "green", "orange",
    ]


def test_cli_builds_and_rejects_unknown_names(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["data", "build", "logos", "--out", str(out), "--limit", "2", "--samples", "6", "--distractors", "2"]
    # a subset is not the committed default build: it is written, then --check says it differs
    # (exit 2, one line, no traceback)
    res = runner.invoke(app, [*args, "--check"])
    assert res.exit_code == 2 and "differs from" in res.output and "Traceback" not in res.output, res.output
    assert "built" in res.output and (out / "WIKIMEL_test.json").is_file() and (out / "manifest.json").is_file()
    assert not out.with_name("cli.partial").exists()
    res = runner.invoke(app, ["data", "build", "nope", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "unknown dataset builder 'nope'" in res.output


def test_committed_manifest_describes_the_default_build():
    ref = json.loads(COMMITTED_MANIFEST.read_text())
    assert ref["params"] == {"seed": 0, "samples": 1200, "distractors": 1000, "limit": None, "nil_share": 0.05}
    assert ref["counts"]["entities"] >= 1000 and sum(ref["counts"]["samples"].values()) >= 400
    assert "files" not in ref  # only the digests are committed, not the data


@pytest.mark.slow
def test_default_build_matches_the_committed_manifest(tmp_path):
    """The full default build (about a minute) reproduces the committed sha256s on the pinned versions."""
    ref = json.loads(COMMITTED_MANIFEST.read_text())
    if library_versions() != ref["versions"]:
        skip_or_fail(f"other library versions than the committed build: {library_versions()} vs {ref['versions']}")
    built = build(tmp_path / "logos", progress=False)
    assert compare_manifests(committed_view(built), ref) == []


def test_unbuilt_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"not built.*retlink data build logos"):
        load_dataset("logos", tmp_path / "missing")
