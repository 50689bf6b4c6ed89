"""The MATE generator on real rendered scenes: determinism, the paper's invariants, balance.

Invariants checked against the renderer's ground truth (truth/*.json): the pointer value is
unique in its modality, the answer is the pointed object's target, the text never carries the
visual-only attributes, no object hides another (each object's pixels in the full scene equal
its pixels rendered alone), and the 5,500-question grid is balanced as the paper's.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter

import numpy as np
import pytest

from retlink.core.errors import ConfigError, DatasetError
from retlink.mate.build import MateSet, build
from retlink.mate.layout import sample_scene
from retlink.mate.questions import (
    CROSS_TASKS,
    PAIRS,
    exact_match,
    extract_answer,
    make_question,
    normalise,
    out_of_scene,
    plan,
)
from retlink.mate.render import render, render_array
from retlink.mate.scene import COLOURS, SHAPES, TEXTUAL_ONLY, VISUAL_ONLY, Reserve, Scene


@pytest.fixture(scope="module")
def small_set(mate_set_dir) -> MateSet:
    return MateSet(mate_set_dir)


def _digest(scene: Scene) -> str:
    return hashlib.sha256(render(scene).tobytes()).hexdigest()


def test_same_seed_same_pixels_and_question():
    items = plan(40, 8, seed=1)
    a = [make_question(i, *items[i], seed=1) for i in (0, 5, 17)]
    b = [make_question(i, *items[i], seed=1) for i in (0, 5, 17)]
    c = [make_question(i, *items[i], seed=2) for i in (0, 5, 17)]
    assert [(q.to_dict(), _digest(s)) for q, s in a] == [(q.to_dict(), _digest(s)) for q, s in b]
    assert [_digest(s) for _, s in a] != [_digest(s) for _, s in c]


def test_build_is_deterministic(tmp_path):
    """Same seed, same bytes, whether one process renders or two."""
    a, b = build(tmp_path / "a", 5, n_controls=1, seed=3), build(tmp_path / "b", 5, n_controls=1, seed=3, workers=2)
    assert a["questions_sha256"] == b["questions_sha256"]
    for name in ("00000", "00005"):
        assert (tmp_path / "a" / "scenes" / f"{name}.png").read_bytes() == (tmp_path / "b" / "scenes" / f"{name}.png").read_bytes()


@pytest.mark.slow
def test_paper_invariants_on_rendered_scenes(small_set):
    questions = list(small_set.questions())
    assert len(questions) == 24 + 8
    for q in questions:
        truth = small_set.truth(q)
        p_attr, t_attr = q.pointer["attribute"], q.target["attribute"]
        assert (p_attr, t_attr) in PAIRS[q.task]
        holders = [o for o in truth.objects if normalise(o.value(p_attr)) == normalise(q.pointer["value"])]
        assert len(holders) == 1, f"{q.id}: pointer {p_attr}={q.pointer['value']} not unique"
        assert holders[0].value(t_attr) == q.answer
        assert len(truth.objects) == q.n_objects
        assert q.answer in q.scene_values
        # the text modality: every object, only the non-visual attributes
        text = json.loads(small_set.text(q))
        assert len(text["objects"]) == q.n_objects
        for row in text["objects"]:
            assert set(row) == {*TEXTUAL_ONLY, "material"}
        raw = small_set.text(q).lower()
        assert not any(w in raw for w in (*COLOURS, *SHAPES)), "a visual-only attribute leaked into the text"
        # the question names the pointer in its own modality only
        if q.task in CROSS_TASKS:
            assert (p_attr in VISUAL_ONLY) != (t_attr in VISUAL_ONLY)
        for shot in q.shots:
            assert shot["answer"] != q.answer or t_attr in VISUAL_ONLY  # textual targets are unique


def test_no_object_is_occluded():
    rng = random.Random(11)
    for n in (10, 9):
        scene = sample_scene(rng, n, [Reserve(0, "color"), Reserve(1, "shape")])
        _, ids = render_array(scene)
        together = np.bincount(ids[ids >= 0].ravel(), minlength=n)
        for k, o in enumerate(scene.objects):
            _, alone = render_array(Scene([o], scene.camera))
            assert together[k] == (alone == 0).sum() > 50, f"object {k} of {n} loses pixels to another"


def test_reserved_values_are_unique():
    rng = random.Random(5)
    for _ in range(6):
        scene = sample_scene(rng, 10, [Reserve(0, "shape"), Reserve(1, "color"), Reserve(2, "color")])
        shapes = Counter(o.shape for o in scene.objects)
        colours = Counter(o.color for o in scene.objects)
        assert shapes[scene.objects[0].shape] == 1
        assert colours[scene.objects[1].color] == colours[scene.objects[2].color] == 1
        assert len({o.name for o in scene.objects}) == len({o.size for o in scene.objects}) == 10
        assert len({o.rotation for o in scene.objects}) == 10


def test_the_5500_are_balanced_as_the_papers():
    items = plan(5500, 1100, seed=0)
    cross = Counter(c for split, c in items if split == "cross")
    assert sum(cross.values()) == 5500
    assert len(cross) == 2 * 8 * 8 and set(cross.values()) == {42, 43}
    by_task = Counter(c.task for c in cross.elements())
    assert by_task["img2data"] in (2749, 2750, 2751) and by_task["img2data"] + by_task["data2img"] == 5500
    by_count = Counter(c.n_objects for c in cross.elements())
    assert max(by_count.values()) - min(by_count.values()) <= 8
    controls = Counter(c.task for split, c in items if split == "control")
    assert controls == {"img2img": 550, "data2data": 550}
    # the order is mixed: a prefix holds every task
    assert {c.task for _, c in items[:60]} == {"img2data", "data2img", "img2img", "data2data"}


def test_scoring_normalises_like_exact_match():
    assert extract_answer('Sure. {"answer": "Object_3"}') == ("Object_3", True)
    assert extract_answer('{"answer": [1.2, -0.5, 0.6]}') == ([1.2, -0.5, 0.6], True)
    assert extract_answer("red") == ("red", False)
    assert exact_match("object_3", "Object_3") and exact_match("The Grey object", "gray")
    assert exact_match("[1.20, -0.5, 0.60]", [1.2, -0.5, 0.6]) and exact_match("356.0", 356)
    assert not exact_match("Object_31", "Object_3") and not exact_match([1.2, -0.5], [1.2, -0.5, 0.6])
    assert out_of_scene("Object_9", ["Object_0", "Object_1"]) and not out_of_scene("object_1", ["Object_0", "Object_1"])


def test_bad_sets_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a MATE set"):
        MateSet(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"format": "other/0"}))
    with pytest.raises(DatasetError, match="format"):
        MateSet(broken)
    (broken / "manifest.json").write_text(json.dumps({"format": "retlink-mate/1"}))
    (broken / "questions.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(DatasetError, match=r"questions.jsonl:1: invalid question"):
        list(MateSet(broken).questions())
    with pytest.raises(ConfigError):
        build(tmp_path / "none", 0)


def test_cli_build(tmp_path):
    from typer.testing import CliRunner

    from retlink.cli import app

    result = CliRunner().invoke(app, ["mate", "build", "--out", str(tmp_path / "s"), "--n", "3", "--controls", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["questions"] == 4 and len(list((tmp_path / "s" / "scenes").glob("*.png"))) == 4
    assert not (tmp_path / "s.partial").exists()
    bad = CliRunner().invoke(app, ["mate", "build", "--out", str(tmp_path / "t"), "--n", "0"])
    assert bad.exit_code == 2
