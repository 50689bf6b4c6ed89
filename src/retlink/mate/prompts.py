"""The prompts a VLM gets for a MATE question, structured as the paper's (arXiv 2503.03854).

One user turn: the image (not for data2data), then a text that describes the scene, states the
task (find the pointer in one modality, link it to the other, give the target), fixes the answer
format {"answer": ...}, explains the [X, Y, Z] coordinate system, gives the scene's text (not for
img2img; JSON, YAML, XML or sentences, `retlink.mate.scene_text`, the paper's format ablation), 0 to 2 worked examples on the same scene, and the question. The chain-of-thought
variant asks for the linking steps first (find the object, list what singles it out, find its
counterpart) and the answer last. Wording is ours; the structure, the information given and the
answer format follow the paper.
"""

from __future__ import annotations

import json
from typing import Any

from retlink.mate.questions import Question, format_value
from retlink.mate.scene import COLOURS, SHAPES
from retlink.mate.scene_text import NOUN

_ANSWER_SLOT = {
    "name": '"NAME"',
    "3d_coords": "[X, Y, Z]",
    "rotation": "ROTATION",
    "size": "SIZE",
    "color": '"COLOR"',
    "shape": '"SHAPE"',
}
_OPTIONS = {"color": ", ".join(COLOURS), "shape": ", ".join(SHAPES)}
_TARGET_NAME = {"3d_coords": "3D coordinates"}
_POINTER_PHRASE = {
    "color": "the {v} object",
    "shape": "the {v}",
    "name": "the object named {v}",
    "3d_coords": "the object at the 3D coordinates {v}",
    "rotation": "the object whose rotation is {v}",
    "size": "the object whose size is {v}",
}
_INTRO_IMAGE = "This image shows a minimalist arrangement of 3D geometric shapes of different materials and colors."
_INTRO_TEXT = (
    "The {doc} below describes every object of {scope}: its name, its 3D coordinates [X, Y, Z], its material "
    "(metal is shiny, rubber is matte) and other attributes."
)
_COORDS = (
    "The coordinate system [X, Y, Z]:\n"
    "- X is depth: smaller values are farther from the camera.\n"
    "- Y is the horizontal position: 0 is the centre of the scene, negative values are to the left, "
    "positive values to the right.\n"
    "- Z is the height of the object's centre above the ground."
)
_TASK = {
    "img2data": "Find {pointer} in the image, use the attributes it shares with the {doc} to find the same object "
    "in the {doc}, and give its {target}.",
    "data2img": "Find {pointer} in the {doc}, use its attributes to find the same object in the image, and give "
    "its {target}.",
    "img2img": "Find {pointer} in the image and give its {target}.",
    "data2data": "Find {pointer} in the {doc} and give its {target}.",
}
_TASK_COT = {
    "img2data": "First find {pointer} in the image. Then list its attributes that the {doc} also has and say "
    "which of them set it apart from the other objects. Next find the object of the {doc} with those same "
    "attributes. Finally give its {target}.",
    "data2img": "First find {pointer} in the {doc}. Then list its attributes and say which of them set it apart "
    "from the other objects. Next find the object in the image that matches those attributes. Finally give "
    "its {target}.",
}


def answer_json(value: Any) -> str:
    """The reply the prompt asks for, e.g. {"answer": "Object_3"} or {"answer": [1.2, -0.5, 0.6]}."""
    return '{"answer": ' + (json.dumps(value) if isinstance(value, str) else format_value(value)) + "}"


def worked_reasoning(task: str, shot: dict[str, Any], target: str, doc: str = "JSON") -> str:
    """The linking steps of a chain-of-thought example, ending where the answer starts."""
    if task not in _TASK_COT or "link" not in shot:
        return ""
    link = shot["link"]
    pointer = _POINTER_PHRASE[shot["pointer"]["attribute"]].format(v=format_value(shot["pointer"]["value"]))
    where = f"the {link['material']} object at about {format_value(link['3d_coords'])}"
    name = _TARGET_NAME.get(target, target)
    value = format_value(shot["answer"])
    if task == "img2data":
        return (f"{pointer[0].upper()}{pointer[1:]} is {where} in the image. In the {doc}, {where} is "
                f"{link['name']}, whose {name} is {value}. ")
    return (f"{pointer[0].upper()}{pointer[1:]} is {where}. In the image, {where} is the one whose "
            f"{name} is {value}. ")


def build_prompt(q: Question, scene_text: str, *, shots: int = 0, cot: bool = False, text_format: str = "json") -> str:
    """The text part of the user turn for question `q` (the image goes beside it); `scene_text`
    is written in `text_format`, which the prompt names."""
    doc = NOUN[text_format]
    target = q.target["attribute"]
    pointer = _POINTER_PHRASE[q.pointer["attribute"]].format(v=format_value(q.pointer["value"]))
    slot = '{"answer": ' + _ANSWER_SLOT[target] + "}"
    task_text = (_TASK_COT if cot and q.task in _TASK_COT else _TASK)[q.task].format(
        pointer=pointer, target=_TARGET_NAME.get(target, target), doc=doc
    )
    parts: list[str] = []
    head = []
    if q.task != "data2data":
        head.append(_INTRO_IMAGE)
    if q.task != "img2img":
        head.append(_INTRO_TEXT.format(doc=doc, scope="the scene in the image" if q.task != "data2data" else "a scene"))
    parts.append(" ".join(head))
    parts.append(task_text)
    if target in _OPTIONS:
        parts.append(f"The {target} is one of: {_OPTIONS[target]}.")
    if cot and q.task in _TASK_COT:
        parts.append(f"Think step by step, then end your reply with the answer in this format: {slot}")
    else:
        parts.append(f"Do not add any other text: answer always in this format: {slot}")
    if q.task != "img2img":
        parts.append(_COORDS)
        parts.append(f"The {doc} of the scene:\n" + scene_text)
    for shot in q.shots[:shots]:
        reasoning = worked_reasoning(q.task, shot, target, doc) if cot else ""
        parts.append(f"Question: {shot['question']}\nAnswer: {reasoning}{answer_json(shot['answer'])}")
    parts.append(f"Question: {q.question}\nAnswer:" if shots else q.question)
    return "\n\n".join(parts)


_REFLECT = (
    "Check your answer before you commit to it: find the object again in the {first}, make sure the object "
    "you linked it to in the {second} is the same one (the attributes both modalities share must agree), and "
    "correct the answer if it is not. End your reply with the final answer in this format: {slot}"
)


_REFLECT_CONTROL = (
    "Check your answer before you commit to it: find the object again in the {first}, make sure the answer is "
    "its own {target}, and correct it if it is not. End your reply with the final answer in this format: {slot}"
)


def reflection(q: Question, text_format: str = "json") -> str:
    """The self-reflection turn: after its first reply the model is asked to verify the link (or,
    in a unimodal control, the object) and answer again (the second reply is the one scored)."""
    doc = NOUN[text_format]
    slot = '{"answer": ' + _ANSWER_SLOT[q.target["attribute"]] + "}"
    if q.task == "img2data":
        return _REFLECT.format(first="image", second=doc, slot=slot)
    if q.task == "data2img":
        return _REFLECT.format(first=doc, second="image", slot=slot)
    target = q.target["attribute"]
    first = "image" if q.task == "img2img" else doc
    return _REFLECT_CONTROL.format(first=first, target=_TARGET_NAME.get(target, target), slot=slot)


def messages(
    q: Question, scene_text: str, image_uri: str | None, *, shots: int = 0, cot: bool = False, text_format: str = "json"
) -> list[dict]:
    """The chat messages of one question (OpenAI format): the image part first, then the text."""
    content: list[dict[str, Any]] = []
    if image_uri is not None and q.task != "data2data":
        content.append({"type": "image_url", "image_url": {"url": image_uri}})
    content.append({"type": "text", "text": build_prompt(q, scene_text, shots=shots, cot=cot, text_format=text_format)})
    return [{"role": "user", "content": content}]
