"""MATE's scene text in JSON, YAML, XML and sentences: each format round-trips exactly, the JSON
is the one a set stores, a malformed text is a typed error, and the prompts name the format."""

from __future__ import annotations

import json

import pytest

from retlink.mate.prompts import build_prompt
from retlink.mate.questions import make_question, plan
from retlink.mate.scene_text import FORMATS, SceneTextError, convert, read, write


def _scenes(k: int):
    items = plan(200, 40, seed=1)
    return [make_question(i, *items[i], seed=1) for i in range(k)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_exactly(fmt):
    for _, scene in _scenes(12):
        records = [o.text_record() for o in scene.objects]
        text = scene.text(fmt)
        assert read(text, fmt) == records, fmt
        assert convert(scene.text(), fmt) == text  # what the harness does with a stored set's JSON
        assert read(text, fmt) == read(scene.text(), "json")


def test_the_formats_differ_and_the_json_is_the_sets():
    _, scene = _scenes(1)[0]
    texts = {f: scene.text(f) for f in FORMATS}
    assert len(set(texts.values())) == 4
    assert json.loads(texts["json"])["objects"][0]["name"] == scene.objects[0].name
    assert texts["xml"].startswith("<scene>") and "<coords>[" in texts["xml"]
    assert texts["yaml"].startswith("objects:")
    first = texts["sentences"].splitlines()[0]
    assert first.startswith(f"{scene.objects[0].name} is a {scene.objects[0].material} object at the 3D coordinates [")
    assert len(texts["sentences"].splitlines()) == len(scene.objects)


@pytest.mark.parametrize(
    ("fmt", "text", "message"),
    [
        ("json", '{"things": []}', "not MATE's JSON"),
        ("yaml", "objects: [{name: a}]", "lacks 3d_coords"),
        ("xml", "<scene><object>", "not MATE's XML"),
        ("xml", "<scene><object><name>a</name><coords>[1, x]</coords><rotation>1</rotation><size>1</size>"
                "<material>metal</material></object></scene>", "malformed"),
        ("xml", '<!DOCTYPE scene [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
                "<scene><object><name>&b;</name></object></scene>", "declares a DTD"),
        ("sentences", "Object_0 is red.", "not a sentence"),
        ("toml", "", "unknown scene text format 'toml'"),
    ],
)
def test_a_malformed_text_is_a_typed_error(fmt, text, message):
    with pytest.raises(SceneTextError, match=message):
        read(text, fmt)


def test_prompts_show_and_name_the_format():
    q, scene = next((q, s) for q, s in _scenes(30) if q.task == "img2data")
    for fmt, noun in (("yaml", "YAML"), ("xml", "XML"), ("sentences", "text")):
        text = scene.text(fmt)
        prompt = build_prompt(q, text, shots=2, cot=True, text_format=fmt)
        assert f"The {noun} of the scene:\n{text}" in prompt
        assert "JSON" not in prompt, fmt
    assert build_prompt(q, scene.text(), shots=2) == build_prompt(q, scene.text(), shots=2, text_format="json")


def test_write_rejects_an_unknown_format():
    with pytest.raises(SceneTextError, match="known: json, yaml, xml, sentences"):
        write([], "csv")
