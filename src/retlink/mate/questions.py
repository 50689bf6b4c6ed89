"""MATE questions: the balanced configuration grid, one question per scene, exact-match scoring.

A question names a pointer attribute value that picks one object in one modality and asks for a
target attribute that only the other modality holds (the paper's tasks, named as its code names
them):

- img2data: pointer colour or shape (visual-only), target name, 3D coordinates, rotation or size;
- data2img: the reverse;
- img2img and data2data: the unimodal controls, pointer and target in the same modality.

The cross-modal set is balanced over (task, object count 3-10, pointer/target pair): 2 x 8 x 8 =
128 configurations, 5,500 questions = 42 or 43 each, as in the paper. The pointer value is unique
in its modality (the scene is drawn so), and the target is absent from the pointer's modality by
the attribute split. Few-shot examples ask the same kind of question about other objects of the
same scene; a shape cannot be unique for three objects at once, so shape-pointer examples point
by colour instead.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from retlink.mate.layout import sample_scene
from retlink.mate.scene import (
    TEXTUAL_ONLY,
    VISUAL_ONLY,
    Reserve,
    Scene,
    SceneObject,
    is_small,
)

CROSS_TASKS = ("img2data", "data2img")
CONTROL_TASKS = ("img2img", "data2data")
OBJECT_COUNTS = tuple(range(3, 11))
#: (pointer, target) pairs of each task
PAIRS: dict[str, list[tuple[str, str]]] = {
    "img2data": [(p, t) for p in VISUAL_ONLY for t in TEXTUAL_ONLY],
    "data2img": [(p, t) for p in TEXTUAL_ONLY for t in VISUAL_ONLY],
    "img2img": [("color", "shape"), ("shape", "color")],
    "data2data": [(p, t) for p in TEXTUAL_ONLY for t in TEXTUAL_ONLY if p != t],
}
SHOTS = 2

_TARGET_WORDS = {
    "name": "What is the name",
    "3d_coords": "What are the 3D coordinates",
    "rotation": "What is the rotation",
    "size": "What is the size",
    "color": "What is the color",
    "shape": "What is the shape",
}
_POINTER_WORDS = {
    "color": "of the {v} object?",
    "shape": "of the {v}?",
    "name": "of the object named {v}?",
    "3d_coords": "of the object at the 3D coordinates {v}?",
    "rotation": "of the object whose rotation is {v}?",
    "size": "of the object whose size is {v}?",
}


@dataclass(frozen=True)
class Config:
    """One cell of the balanced grid."""

    task: str
    n_objects: int
    pointer: str
    target: str


@dataclass
class Question:
    """One question, its answer and what scoring needs; `scene` names the PNG/JSON pair."""

    id: str
    split: str  # "cross" or "control"
    task: str
    scene: str
    n_objects: int
    pointer: dict[str, Any]  # {"attribute": ..., "value": ...}
    target: dict[str, Any]
    question: str
    answer: Any
    #: few-shot examples on the same scene: [{"question", "answer"}, ...]
    shots: list[dict[str, Any]] = field(default_factory=list)
    #: the target attribute's value of every object in the scene (out-of-scene errors)
    scene_values: list[Any] = field(default_factory=list)
    #: how many shared attributes (material, size class) it takes to single the object out:
    #: 1 or 2, or 0 when only the position links it
    linking: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def grid(tasks: tuple[str, ...]) -> list[Config]:
    return [Config(t, n, p, q) for t in tasks for n in OBJECT_COUNTS for p, q in PAIRS[t]]


def allocate(total: int, configs: list[Config], rng: random.Random) -> list[Config]:
    """`total` configurations spread as evenly as possible (counts differ by at most one; which
    cells get the extra one is drawn from `rng`)."""
    base, extra = divmod(total, len(configs))
    lucky = set(rng.sample(range(len(configs)), extra))
    return [c for i, c in enumerate(configs) for _ in range(base + (i in lucky))]


def plan(n: int, n_controls: int, seed: int) -> list[tuple[str, Config]]:
    """(split, config) of every question, in a seeded shuffled order (so a prefix is a mix)."""
    rng = random.Random(f"mate-plan-{seed}")
    items = [("cross", c) for c in allocate(n, grid(CROSS_TASKS), rng)]
    half = n_controls // 2
    items += [("control", c) for c in allocate(half, grid(("img2img",)), rng)]
    items += [("control", c) for c in allocate(n_controls - half, grid(("data2data",)), rng)]
    rng.shuffle(items)
    return items


def format_value(value: Any) -> str:
    """How a value is written in questions and expected in answers: [x, y, z], 0.55, Object_3."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def question_text(pointer: str, pointer_value: Any, target: str) -> str:
    return f"{_TARGET_WORDS[target]} {_POINTER_WORDS[pointer].format(v=format_value(pointer_value))}"


def _shot_pair(pointer: str, target: str) -> tuple[str, str]:
    """The (pointer, target) of the few-shot examples: the question's own, except that a shape
    pointer becomes a colour one (three objects cannot each have a unique shape)."""
    if pointer != "shape":
        return pointer, target
    return ("color", target if target != "color" else "shape")


def linking_count(gold: SceneObject, scene: Scene) -> int:
    """Smallest number of shared attributes (material, size class) that single `gold` out; 0 when
    none does and only the position links the two modalities."""
    def key(o: SceneObject, attrs: tuple[str, ...]) -> tuple:
        return tuple(o.material if a == "material" else is_small(o.size) for a in attrs)

    others = [o for o in scene.objects if o is not gold]
    for k in (1, 2):
        for attrs in itertools.combinations(("material", "size"), k):
            if all(key(o, attrs) != key(gold, attrs) for o in others):
                return k
    return 0


def make_question(index: int, split: str, config: Config, seed: int) -> tuple[Question, Scene]:
    """The question `index` of the set and its scene; depends only on (seed, index, config)."""
    rng = random.Random(f"mate-{seed}-{index}")
    shot_p, shot_t = _shot_pair(config.pointer, config.target)
    reserves = []
    if config.pointer in VISUAL_ONLY:
        reserves.append(Reserve(0, config.pointer))
    n_shots = min(SHOTS, config.n_objects - 1)
    if shot_p in VISUAL_ONLY:
        reserves += [Reserve(i, shot_p) for i in range(1, 1 + n_shots)]
    scene = sample_scene(rng, config.n_objects, reserves)
    gold = scene.objects[0]
    shots = [
        {
            "question": question_text(shot_p, o.value(shot_p), shot_t),
            "answer": o.value(shot_t),
            # what links it (for the chain-of-thought examples' worked reasoning)
            "pointer": {"attribute": shot_p, "value": o.value(shot_p)},
            "link": {"name": o.name, "material": o.material, "3d_coords": o.coords},
        }
        for o in scene.objects[1 : 1 + n_shots]
    ]
    # the list order of the text is then shuffled, so object 0 being the gold leaks nothing
    order = list(range(config.n_objects))
    rng.shuffle(order)
    scene = Scene([scene.objects[i] for i in order], scene.camera)
    name = f"{index:05d}"
    q = Question(
        id=f"mate-{name}",
        split=split,
        task=config.task,
        scene=name,
        n_objects=config.n_objects,
        pointer={"attribute": config.pointer, "value": gold.value(config.pointer)},
        target={"attribute": config.target, "value": gold.value(config.target)},
        question=question_text(config.pointer, gold.value(config.pointer), config.target),
        answer=gold.value(config.target),
        shots=shots,
        scene_values=[o.value(config.target) for o in scene.objects],
        linking=linking_count(gold, scene),
    )
    return q, scene


# -- scoring ---------------------------------------------------------------------------------

_ANSWER_JSON = re.compile(r'\{\s*"answer"\s*:.*?\}', re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(text: str) -> tuple[Any, bool]:
    """(answer, found_json): the last {"answer": ...} object in a reply (the format the prompt
    asks for), else the whole reply as text."""
    cleaned = text.replace("\\", "").replace("\n", " ")
    for match in reversed(_ANSWER_JSON.findall(cleaned)):
        # a list answer holds commas and brackets: widen to the closing brace after the list
        candidates = [match]
        if "[" in match and "]" not in match:
            end = cleaned.find("}", cleaned.find(match) + len(match))
            if end > 0:
                candidates.append(cleaned[cleaned.find(match) : end + 1])
        for c in candidates:
            try:
                return json.loads(c)["answer"], True
            except (ValueError, KeyError, TypeError):
                continue
    return text.strip(), False


def normalise(value: Any) -> str:
    """Canonical text of an answer: numbers as %g, a list of numbers as [a, b, c], words lower
    case without punctuation or a leading article, "grey" as "gray"."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return format_value(float(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(normalise(v) for v in value) + "]"
    text = str(value).strip().lower()
    numbers = _NUMBER.findall(text)
    if numbers and re.fullmatch(r"[\s\[\]\(\),\d.\-]*", text):
        values = [format_value(float(x)) for x in numbers]
        return values[0] if len(values) == 1 and "[" not in text and "(" not in text else "[" + ", ".join(values) + "]"
    words = re.sub(r"[^\w\s]", " ", text).split()
    if words and words[0] in ("the", "a", "an"):
        words = words[1:]
    words = ["gray" if w == "grey" else w for w in words]
    if words and words[-1] == "object" and len(words) > 1:  # "red object" -> "red"
        words = words[:-1]
    return " ".join(words)


def exact_match(prediction: Any, answer: Any) -> bool:
    """The normalised prediction equals the normalised answer (MATE's metric)."""
    return normalise(prediction) == normalise(answer)


def out_of_scene(prediction: Any, scene_values: list[Any]) -> bool:
    """The prediction names no value that any object of the scene has for the target attribute
    (the paper's out-of-scene error: the model made the answer up)."""
    p = normalise(prediction)
    return all(p != normalise(v) for v in scene_values)
