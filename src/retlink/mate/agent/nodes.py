"""Nodes of the MATE binding agent: the steps the paper's human annotators describe (find the
object in one modality, find what links it to the other, read the answer there), done with tools.

    parse      the question -> task, pointer (attribute, value), target attribute
    perceive   the PNG -> regions (objects found in the image) with their colour
    link       the JSON's objects, projected through the camera as each shape, matched to the
               regions by overlap (position and apparent size are what link them); the best
               shape of each match is the object's shape
    answer     the pointer found in its modality, followed across the link, the target read

The agent reads the image, the JSON text and the question; nothing else about the scene. It
knows the benchmark's camera (fixed, published in the set's manifest) and what a cube, a sphere
and a cylinder of a given size look like: that is the model it projects the text through.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from PIL import Image

from retlink.core.errors import RetlinkError
from retlink.mate.questions import normalise
from retlink.mate.render import silhouette
from retlink.mate.scene import COLOURS, SHAPES, Camera, SceneObject
from retlink.mate.scene_parse import iou, segment
from retlink.mate.scene_text import read as scene_text_read

_TARGETS = {
    "What is the name": "name",
    "What are the 3D coordinates": "3d_coords",
    "What is the rotation": "rotation",
    "What is the size": "size",
    "What is the color": "color",
    "What is the shape": "shape",
}
_POINTERS = [
    ("name", re.compile(r"of the object named (\S+?)\?$")),
    ("3d_coords", re.compile(r"of the object at the 3D coordinates (\[.*?\])\?$")),
    ("rotation", re.compile(r"of the object whose rotation is (\S+?)\?$")),
    ("size", re.compile(r"of the object whose size is (\S+?)\?$")),
    ("shape", re.compile(rf"of the ({'|'.join(SHAPES)})\?$")),
    ("color", re.compile(rf"of the ({'|'.join(COLOURS)}) object\?$")),
]
VISUAL = ("color", "shape")


class QuestionNotUnderstood(RetlinkError):
    """The question is not one of MATE's templates."""


def parse(state: dict[str, Any]) -> dict[str, Any]:
    """Task parts from the question text (MATE's questions are templated; no LLM needed)."""
    text = state["question"].strip()
    target = next((a for prefix, a in _TARGETS.items() if text.startswith(prefix)), None)
    pointer = next(((a, m.group(1)) for a, rx in _POINTERS if (m := rx.search(text))), None)
    if target is None or pointer is None:
        raise QuestionNotUnderstood(f"not a MATE question: {text!r}")
    return {"target": target, "pointer": pointer, "_detail": {"target": target, "pointer": pointer[0]}}


def perceive(state: dict[str, Any]) -> dict[str, Any]:
    """Objects found in the image, each with its colour."""
    img = np.asarray(Image.open(state["image_path"]).convert("RGB"), dtype=np.float64) / 255.0
    regions = segment(img)
    return {"regions": regions, "_detail": {"regions": len(regions)}}


Hypothesis = tuple[int, str, np.ndarray, tuple[int, int, int, int]]


def hypotheses(objects: list[dict[str, Any]], camera: Camera) -> list[Hypothesis]:
    """(object index, shape, silhouette, box) of every text object rendered as each shape where
    the camera sees it: what the image should show if the text is right. Depends on the text
    alone, so a caller that perceives one scene many times (an attack) makes it once."""
    h, w = camera.height, camera.width
    out: list[Hypothesis] = []
    for j, o in enumerate(objects):
        x, y, _ = o["3d_coords"]
        for shape in SHAPES:
            hyp = SceneObject(o["name"], shape, "gray", o["material"], float(o["size"]), int(o["rotation"]), x, y)
            p = camera.project(hyp.corners())
            x0, y0 = max(0, int(np.floor(p[:, 0].min()))), max(0, int(np.floor(p[:, 1].min())))
            x1, y1 = min(w, int(np.ceil(p[:, 0].max()))), min(h, int(np.ceil(p[:, 1].max())))
            if x1 <= x0 or y1 <= y0:
                continue
            out.append((j, shape, silhouette(hyp, camera, (x0, y0, x1, y1)), (x0, y0, x1, y1)))
    return out


def match(regions: list[Any], hyps: list[Hypothesis], n_objects: int) -> tuple[dict[int, int], dict[int, str], float]:
    """Regions matched to text objects by silhouette overlap (Hungarian assignment): ({region:
    object}, {region: its best shape}, mean overlap of the assignment)."""
    from scipy.optimize import linear_sum_assignment

    scores = np.zeros((len(regions), n_objects))
    shapes = np.empty((len(regions), n_objects), dtype=object)
    for j, shape, sil, box in hyps:
        for i, r in enumerate(regions):
            s = iou(r.mask, r.box, sil, box)
            if s > scores[i, j]:
                scores[i, j], shapes[i, j] = s, shape
    rows, cols = linear_sum_assignment(-scores)
    links = {int(i): int(j) for i, j in zip(rows, cols, strict=True) if scores[i, j] > 0.2}
    mean = float(scores[rows, cols].mean()) if len(rows) else 0.0
    return links, {i: shapes[i, j] for i, j in links.items()}, mean


def scene_objects(scene_text: str, fmt: str = "json") -> list[dict[str, Any]]:
    """The objects of MATE's scene text in any of its formats (`retlink.mate.scene_text`); a
    typed error for anything else."""
    return scene_text_read(scene_text, fmt)


def link(state: dict[str, Any], *, camera: Camera) -> dict[str, Any]:
    """Match regions and text objects by silhouette overlap, read shapes."""
    objects = scene_objects(state["scene_json"], state.get("text_format", "json"))
    links, region_shapes, mean_iou = match(state["regions"], hypotheses(objects, camera), len(objects))
    return {
        "objects": objects,
        "links": links,
        "shapes": region_shapes,
        "_detail": {"linked": len(links), "of": len(objects), "mean_iou": round(mean_iou, 3)},
    }


def answer(state: dict[str, Any]) -> dict[str, Any]:
    """Find the pointed object in its modality, cross the link, read the target."""
    pointer_attr, pointer_value = state["pointer"]
    target = state["target"]
    regions, objects, links, shapes = state["regions"], state["objects"], state["links"], state["shapes"]
    region = obj = None
    if pointer_attr in VISUAL:
        found = [i for i, r in enumerate(regions) if (r.color if pointer_attr == "color" else shapes.get(i)) == pointer_value]
        if pointer_attr == "color" and len(found) > 1:  # several read as this colour: the surest
            found.sort(key=lambda i: -regions[i].color_confidence)
        region = found[0] if found else None
        obj = objects[links[region]] if region is not None and region in links else None
    else:
        want = normalise(pointer_value)
        obj = next((o for o in objects if normalise(o[pointer_attr]) == want), None)
        if obj is not None:
            j = objects.index(obj)
            region = next((i for i, jj in links.items() if jj == j), None)
    if target in VISUAL:
        if region is None:
            return {"answer": None, "_skipped": "no image object for the pointer"}
        value = regions[region].color if target == "color" else shapes.get(region)
    else:
        if obj is None:
            return {"answer": None, "_skipped": "no text object for the pointer"}
        value = obj[target]
    return {"answer": value, "_detail": {"region": region, "object": obj["name"] if obj else None}}
