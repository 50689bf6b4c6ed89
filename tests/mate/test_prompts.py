"""The MATE prompts carry what each task needs and nothing it must not: the JSON unless the task
is img2img, the image unless it is data2data, the answer format, worked examples on request."""

from __future__ import annotations

import json

from retlink.mate.prompts import build_prompt, messages
from retlink.mate.questions import make_question, plan


def _first_of(task: str):
    items = plan(400, 80, seed=0)
    i = next(i for i, (_, c) in enumerate(items) if c.task == task)
    return make_question(i, *items[i], seed=0)


def test_each_task_gets_its_modalities():
    for task in ("img2data", "data2img", "img2img", "data2data"):
        q, scene = _first_of(task)
        msgs = messages(q, scene.text(), "data:image/png;base64,AAAA", shots=2)
        parts = msgs[0]["content"]
        has_image = any(p["type"] == "image_url" for p in parts)
        text = parts[-1]["text"]
        assert has_image == (task != "data2data"), task
        assert (scene.text() in text) == (task != "img2img"), task
        assert '{"answer": ' in text and text.rstrip().endswith("Answer:")
        assert text.count("Question: ") == 3


def test_chain_of_thought_examples_show_the_linking_steps():
    q, scene = _first_of("img2data")
    plain = build_prompt(q, scene.text(), shots=2)
    cot = build_prompt(q, scene.text(), shots=2, cot=True)
    shot = q.shots[0]
    assert "Think step by step" in cot and "Think step by step" not in plain
    assert shot["link"]["name"] in cot.split("The JSON of the scene:")[1].split("Question:")[1]
    assert json.dumps(shot["answer"]) in plain or str(shot["answer"]) in plain
    assert build_prompt(q, scene.text(), shots=0).endswith(q.question)


def test_the_reflection_turn_names_the_modalities_it_links():
    from retlink.mate.prompts import reflection

    img2data, _ = _first_of("img2data")
    data2img, _ = _first_of("data2img")
    control, _ = _first_of("data2data")
    assert "again in the image" in reflection(img2data) and "linked it to in the XML is" in reflection(img2data, "xml")
    assert "again in the YAML" in reflection(data2img, "yaml") and "linked it to in the image is" in reflection(data2img)
    assert "again in the JSON" in reflection(control) and "linked" not in reflection(control)
    assert reflection(img2data).endswith('{"answer": ' + {"name": '"NAME"', "3d_coords": "[X, Y, Z]", "rotation": "ROTATION",
                                                           "size": "SIZE"}[img2data.target["attribute"]] + "}")
