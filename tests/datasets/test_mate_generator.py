"""The MATE-style generator: deterministic scenes, well-posed questions, exact-match scoring."""

from __future__ import annotations

import hashlib
import json

import pytest

from retlink.eval.mate import (
    COLOURS,
    SIZES,
    exact_match,
    generate,
    make_scene,
    normalise,
    score,
)


def digest(scene) -> str:
    return hashlib.sha256(scene.render().tobytes()).hexdigest()


def test_same_seed_same_pixels_and_questions():
    a = [(digest(s), [q.to_dict() for q in qs]) for s, qs in generate(6, seed=7)]
    b = [(digest(s), [q.to_dict() for q in qs]) for s, qs in generate(6, seed=7)]
    c = [(digest(s), [q.to_dict() for q in qs]) for s, qs in generate(6, seed=8)]
    assert a == b
    assert a != c


def test_scenes_have_3_to_10_objects_inside_the_image_without_overlap():
    counts = set()
    for scene, _ in generate(40, seed=1):
        objs = scene.objects
        counts.add(len(objs))
        assert 3 <= len(objs) <= 10
        assert len({o.name for o in objs}) == len(objs)
        for o in objs:
            r = SIZES[o.size]
            assert r <= o.x <= scene.width - r and r <= o.y <= scene.height - r
        for i, o in enumerate(objs):
            for p in objs[i + 1 :]:
                gap = SIZES[o.size] + SIZES[p.size]
                assert abs(o.x - p.x) > gap or abs(o.y - p.y) > gap
    assert len(counts) >= 5  # the object count varies
    with pytest.raises(ValueError):
        make_scene(0, n_objects=11)


def test_rendering_shows_each_object_colour_at_its_position():
    scene = make_scene(3, n_objects=4)
    img = scene.render()
    for o in scene.objects:
        # sample just below the centre (above it sits the metal highlight)
        px = img.getpixel((o.x, o.y + SIZES[o.size] // 2))
        assert max(abs(a - b) for a, b in zip(px, COLOURS[o.colour], strict=True)) < 40, (o, px)


def test_questions_are_well_posed_in_both_directions():
    directions = set()
    for scene, questions in generate(30, seed=2):
        text = json.loads(scene.text())["objects"]
        assert {r["name"] for r in text} == {o.name for o in scene.objects}
        assert "colour" not in scene.text() and "shape" not in scene.text()  # image-only attributes
        for q in questions:
            directions.add(q.direction)
            key, value = q.pointer
            matches = [o for o in scene.objects if o.attribute(key) == value]
            assert len(matches) == 1  # the pointer picks exactly one object
            assert matches[0].attribute(q.target) == q.answer
    assert directions == {"image_to_text", "text_to_image"}


def test_exact_match_scoring():
    assert normalise("The Grey.") == "gray" and exact_match("object_12", "Object_12")
    assert not exact_match("Object_1", "Object_12")
    _, questions = next(generate(1, seed=5))
    perfect = {q.id: q.answer for q in questions}
    assert score(perfect, questions)["overall"] == 1.0
    assert score({}, questions)["overall"] == 0.0
    half = {questions[0].id: questions[0].answer.upper()}
    assert score(half, questions)["overall"] == pytest.approx(1 / len(questions))
