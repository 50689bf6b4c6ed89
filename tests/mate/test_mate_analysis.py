"""The random baseline and the linking-attribute analysis, on a scene and questions made by hand
(the expected numbers are worked out in the comments, not by the code under test)."""

from __future__ import annotations

import pytest

from retlink.mate.analysis import COMBINATIONS, chance, gold_object, unique_by
from retlink.mate.harness import load_mate_config
from retlink.mate.questions import Question
from retlink.mate.report import build_summary, markdown
from retlink.mate.scene import Scene, SceneObject

# A: red cube, rubber, small, far left ninth (0, 0)     B: red sphere, metal, large, far right (0, 2)
# C: blue cube, metal, small, near left (2, 0)          D: blue sphere, rubber, large, near left (2, 0)
A = SceneObject("Object_0", "cube", "red", "rubber", 0.4, 10, -2.5, -2.5)
B = SceneObject("Object_1", "sphere", "red", "metal", 0.6, 20, -2.5, 2.5)
C = SceneObject("Object_2", "cube", "blue", "metal", 0.4, 30, 2.5, -2.5)
D = SceneObject("Object_3", "sphere", "blue", "rubber", 0.6, 40, 2.5, -2.0)
SCENE = Scene([A, B, C, D])


def _combos(*names: str) -> set[str]:
    return {"+".join(n) if isinstance(n, tuple) else n for n in names}


def test_there_are_25_combinations_of_up_to_three_attributes():
    assert len(COMBINATIONS) == 5 + 10 + 10 and COMBINATIONS[0] == "color" and COMBINATIONS[-1].count("+") == 2


def test_which_combinations_single_out_an_object():
    # A: only its position is unique alone; of the pairs only shape + size (C is a small cube too)
    # is not; every triple is.
    singles, pairs, triples = (set(c for c in COMBINATIONS if c.count("+") == k) for k in (0, 1, 2))
    assert set(unique_by(A, SCENE)) == {"position"} | (pairs - {"shape+size_class"}) | triples
    # D: no single attribute; not colour + position (C is blue in the same ninth), not shape + size
    # (B is a large sphere); every triple.
    assert set(unique_by(D, SCENE)) == (pairs - {"color+position", "shape+size_class"}) | triples
    assert not singles & set(unique_by(D, SCENE))


def _question(qid: str, target: str, answer, values, pointer=("color", "red")) -> Question:
    return Question(id=qid, split="cross", task="img2data" if target not in ("color", "shape") else "data2img",
                    scene="00000", n_objects=len(values), pointer={"attribute": pointer[0], "value": pointer[1]},
                    target={"attribute": target, "value": answer}, question="?", answer=answer, scene_values=values)


def test_chance_is_one_over_the_admissible_answers():
    names = [o.name for o in SCENE.objects]
    qs = [
        _question("q1", "color", "red", ["red", "red", "blue", "blue"], ("name", "Object_0")),  # 8 listed colours
        _question("q2", "shape", "cube", ["cube", "sphere", "cube", "sphere"], ("name", "Object_0")),  # 3 shapes
        _question("q3", "name", "Object_2", names),  # 4 names in the scene
        _question("q4", "rotation", 10, [10, 10.0, 20]),  # 2 distinct rotations
    ]
    assert [chance(q) for q in qs] == [1 / 8, 1 / 3, 1 / 4, 1 / 2]
    assert sum(chance(q) for q in qs) / 4 == pytest.approx(29 / 96)


def test_gold_object_follows_the_pointer():
    assert gold_object(_question("q", "name", "x", [], ("material", "metal")), SCENE) is None  # two metal objects
    assert gold_object(_question("q", "name", "x", [], ("3d_coords", [2.5, -2.0, 0.6])), SCENE) is D


def _record(qid: str, correct: bool, chance_: float, by: list[str], task: str = "img2data") -> dict:
    return {"key": qid, "question_id": qid, "model": "m", "prompt": "p", "attack": "clean", "split": "cross",
            "task": task, "n_objects": 4, "linking": 0, "status": "ok", "correct": correct, "out_of_scene": False,
            "seconds": 0.1, "chance": chance_, "unique_by": by}


def test_the_report_shows_the_computed_baseline_and_the_combination_table(tmp_path):
    cfg = load_mate_config({"name": "hand", "data": {"path": str(tmp_path)}, "models": [{"name": "m", "kind": "binding_agent"}],
                            "bootstrap_resamples": 50})
    records = {r["key"]: r for r in [
        _record("q1", True, 1 / 8, ["position", "color+shape"]),
        _record("q2", False, 1 / 3, ["color+shape"], task="data2img"),
        _record("q3", True, 1 / 4, []),
        _record("q4", True, 1 / 2, ["color+shape", "color+material+position"]),
    ]}
    summary = build_summary(cfg, {"fingerprint": "f", "data": str(tmp_path)}, records)
    row = summary["rows"]["m · p"]
    assert row["chance"]["cross_modal"] == pytest.approx(29 / 96, abs=1e-4)
    assert row["chance"]["data2img"] == pytest.approx(1 / 3, abs=1e-4)
    assert row["cross_modal"]["accuracy"] == 0.75
    table = summary["combinations"]
    assert table["questions"] == 4
    shape = table["rows"]["color+shape"]
    assert (shape["n"], shape["share"], shape["accuracy"]["m · p"]["accuracy"]) == (3, 0.75, pytest.approx(2 / 3, abs=1e-4))
    assert table["rows"]["position"]["accuracy"]["m · p"]["accuracy"] == 1.0
    assert table["rows"]["material"] == {"n": 0, "share": 0.0, "accuracy": {}}
    text = markdown(summary, cfg, [])
    assert "| m · p | 100.0" in text and "| 30.2 |" in text  # 29/96 = 30.2%
    assert "| color + shape | 75.0 (3) | 66.7" in text
