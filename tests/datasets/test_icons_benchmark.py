"""The icons benchmark builder (`retlink data build icons`) on the hand-written fixture sets
(`tests/fixtures/iconify_sets`: three tiny Iconify sets), with real cairosvg rendering, read back
by the real loaders; and, when `make icons-sources` has fetched the pinned packages, the default
build against the committed manifest.

What must hold for the benchmark to mean anything: the same seed gives the same bytes; every gold
is a KB entity (or NIL); every mention word names two or more KB entities; the mention image is
drawn by another set than the KB image (other hands); test golds were never golds in training;
and a missing or broken source is a clear error, not a traceback.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retlink.cli import app
from retlink.core.errors import ConfigError
from retlink.core.types import NIL
from retlink.datasets import load_dataset
from retlink.datasets.build import icons
from retlink.datasets.build.common import SPLITS, committed_view, compare_manifests, library_versions
from retlink.tools.kb.store import normalise_name
from tests.conftest import skip_or_fail

FIXTURE_SETS = Path(__file__).resolve().parents[1] / "fixtures" / "iconify_sets"
SMALL = {"seed": 1, "samples": 40, "distractors": 2, "nil_share": 0.1}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("icons") / "icons"
    return out, icons.build(out, sources=FIXTURE_SETS, progress=False, **SMALL)


def records(root: Path) -> list[dict]:
    return [r for s in SPLITS for r in json.loads((root / f"WIKIMEL_{s}.json").read_text())]


def test_concepts_keep_the_plain_variant_and_drop_numbers():
    sets = icons.load_sets(FIXTURE_SETS)
    beta = next(s for s in sets if s.prefix == "beta")
    gamma = next(s for s in sets if s.prefix == "gamma")
    assert "old-bell" not in beta.icons and "heart-off-flipped" not in beta.aliases  # hidden, flipped
    assert icons.concepts_of_set(beta)["bell"] == "bell"  # not bell-filled
    assert icons.concepts_of_set(gamma)["bell"] == "bell-line"  # the outline before the fill
    assert "home 2" not in icons.concepts_of_set(beta)
    assert icons.concept_of("traffic-light", icons.GENERIC_STYLES) == ("traffic light", 0)  # not a style here
    assert icons.concept_of("battery-1", icons.GENERIC_STYLES) is None
    concepts = {c.id: c for c in icons.candidate_concepts(sets)}
    assert all(len(c.drawn_by) >= 2 for c in concepts.values())
    assert "notification" not in concepts  # one set only


def test_small_build_is_read_by_both_loaders(small):
    root, manifest = small
    c = manifest["counts"]
    for key in ("icons", "wikimel"):
        ds = load_dataset(key, root)
        assert {s: sum(1 for _ in ds.samples(s)) for s in SPLITS} == {s: c["samples"][s] - c["nil_samples"][s] for s in SPLITS}
        entities = {e.id: e for e in ds.entities()}
        assert len(entities) == c["entities"]
        for sample in ds.samples():
            assert sample.gold_id in entities and sample.image_path.is_file()
            assert sample.mention in sample.context
    assert any(e.aliases for e in load_dataset("icons", root).entities())
    nil = [s for s in load_dataset("icons", root, include_nil=True).samples() if s.gold_id == NIL]
    assert len(nil) == sum(c["nil_samples"].values()) > 0
    assert sum(c["samples"].values()) == SMALL["samples"]


def test_same_seed_same_bytes(small, tmp_path):
    _, first = small
    again = icons.build(tmp_path / "again", sources=FIXTURE_SETS, progress=False, **SMALL)
    assert again["files"] == first["files"] and again["digests"] == first["digests"]
    other = icons.build(tmp_path / "other", sources=FIXTURE_SETS, progress=False, **{**SMALL, "seed": 2})
    assert other["digests"]["all"] != first["digests"]["all"]
    assert compare_manifests(committed_view(other), committed_view(first))


def test_golds_mentions_and_hands(small):
    root, _ = small
    entities = {e.id: e for e in load_dataset("icons", root).entities()}
    by_alias: dict[str, set[str]] = {}
    for e in entities.values():
        for n in [e.name, *e.aliases]:
            by_alias.setdefault(normalise_name(n), set()).add(e.id)
    sets = {s.prefix: s for s in icons.load_sets(FIXTURE_SETS)}
    drawn = {c.id: c.drawn_by for c in icons.candidate_concepts(list(sets.values()))}
    rows = records(root)
    assert rows
    for r in rows:
        assert r["answer"] == "nil" or r["answer"] in entities
        # the alias table returns 2+ KB entities for the mention: it cannot decide alone
        assert len(by_alias[normalise_name(r["mentions"])]) >= 2, r
        # other hands: the mention image is another set's drawing than the KB image's
        assert r["mention_set"] != r["kb_set"] and {r["mention_set"], r["kb_set"]} <= set(drawn[r["entities"].replace(" ", "-")])
        if r["answer"] != "nil":
            assert f'"{drawn[r["answer"]][r["kb_set"]]}"' in entities[r["answer"]].description
        others = set(r["entities"].split()) - {r["mentions"]}
        assert not others & set(r["sentence"].lower().replace(".", " ").split()), r


def test_split_by_entity(small):
    root, _ = small
    ds = load_dataset("icons", root, include_nil=True)
    golds = {split: {s.gold_id for s in ds.samples(split)} - {NIL} for split in SPLITS}
    assert golds["test"] and golds["train"]
    assert not golds["test"] & golds["train"] and not golds["test"] & golds["dev"] and not golds["train"] & golds["dev"]


def test_missing_sources_are_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["data", "build", "icons", "--out", str(tmp_path / "o"), "--sources", str(tmp_path / "none")])
    assert res.exit_code == 2 and "make icons-sources" in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match=r"tabler.*make icons-sources"):
        icons.load_sets(tmp_path, sets=["tabler"])


def test_default_sources_name_the_make_target_and_the_pins(tmp_path, monkeypatch):
    monkeypatch.setenv("RETLINK_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(app, ["data", "build", "icons", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "make icons-sources" in res.output and "tabler" in res.output, res.output
    # a set fetched at another version than the pin is refused, not silently built from
    for prefix in icons.pinned_sets():
        shutil.copytree(FIXTURE_SETS / "alpha", icons.default_sources() / prefix)
        (icons.default_sources() / prefix / "package.json").write_text('{"version": "0.0.1"}')
    with pytest.raises(ConfigError, match=r"other versions than sources.txt pins.*make icons-sources"):
        icons.load_sets(icons.default_sources())


def test_malformed_icons_json_names_the_file(tmp_path):
    sources = tmp_path / "sets"
    shutil.copytree(FIXTURE_SETS, sources)
    broken = sources / "beta" / "icons.json"
    broken.write_text('{"prefix": "beta", "icons": {"bell": {"body": "<path/>"}')
    with pytest.raises(ConfigError, match=rf"{re.escape(str(broken))}: not valid Iconify JSON"):
        icons.build(tmp_path / "o", sources=sources, progress=False)
    broken.write_text('{"prefix": "beta", "icons": {"bell": {"width": 24}}}')
    res = CliRunner().invoke(app, ["data", "build", "icons", "--out", str(tmp_path / "o"), "--sources", str(sources)])
    assert res.exit_code == 2 and "icons.json" in res.output and "'bell' has no 'body'" in res.output, res.output


def test_cli_builds_from_the_fixture_sets(tmp_path):
    out = tmp_path / "cli"
    args = ["data", "build", "icons", "--out", str(out), "--sources", str(FIXTURE_SETS), "--samples", "8"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "built" in res.output, res.output
    assert (out / "WIKIMEL_test.json").is_file() and not out.with_name("cli.partial").exists()
    res = CliRunner().invoke(app, ["data", "build", "logos", "--out", str(tmp_path / "x"), "--sources", str(FIXTURE_SETS)])
    assert res.exit_code == 2 and "--sources is for the icons benchmark" in res.output


def test_pinned_sources_and_unbuilt_folder():
    pinned = icons.pinned_sets()
    assert {"tabler", "lucide", "mdi"} <= set(pinned)
    assert all(p["integrity"].startswith("sha512-") and p["licence"] in ("MIT", "ISC", "Apache-2.0") for p in pinned.values())
    with pytest.raises(ConfigError, match=r"not built.*retlink data build icons"):
        load_dataset("icons", FIXTURE_SETS / "missing")


def _real_sources_or_skip() -> Path:
    sources = icons.default_sources()
    pinned = icons.pinned_sets()
    missing = [p for p, v in pinned.items() if json.loads((sources / p / "package.json").read_text() if (sources / p / "package.json").is_file() else "{}").get("version") != v["version"]]
    if missing:
        skip_or_fail(f"the pinned Iconify sets {missing} are not in {sources} (run `make icons-sources`)")
    return sources


def test_committed_manifest_describes_the_default_build():
    if not icons.COMMITTED_MANIFEST.is_file():
        pytest.fail(f"{icons.COMMITTED_MANIFEST} is missing: build the default and commit its manifest")
    ref = json.loads(icons.COMMITTED_MANIFEST.read_text())
    assert ref["params"] == {"seed": 0, "samples": 1200, "distractors": 100, "limit": None, "nil_share": 0.05}
    assert 1000 <= ref["counts"]["entities"] <= 2000 and min(ref["counts"]["samples"].values()) >= 200
    assert "files" not in ref
    assert {p: v["version"] for p, v in ref["source"]["packages"].items()} == {p: v["version"] for p, v in icons.pinned_sets().items()}


@pytest.mark.slow
def test_default_build_matches_the_committed_manifest(tmp_path):
    """The full default build from the fetched sets reproduces the committed sha256s on the pinned versions."""
    _real_sources_or_skip()
    ref = json.loads(icons.COMMITTED_MANIFEST.read_text())
    if library_versions() != ref["versions"]:
        skip_or_fail(f"other library versions than the committed build: {library_versions()} vs {ref['versions']}")
    built = icons.build(tmp_path / "icons", progress=False)
    assert compare_manifests(committed_view(built), ref) == []
