"""A MATE-style generator: synthetic scenes and cross-modal linking questions with exact answers.

After MATE (Alonso et al., "Vision-Language Models Struggle to Align Entities across
Modalities", ACL 2025, arXiv 2503.03854): scenes of 3 to 10 objects (shape, colour, material,
size, position) shown as an image, plus a text listing the same objects by name and position.
Some attributes live in one modality only, so answering needs linking the object across them:

- image -> text: "What is the name of the red object?": colour is visible only in the image,
  the name only in the text; the object is found in the image and linked through its position;
- text -> image: "What is the colour of Object_3?": the reverse.

The pointer attribute value is unique in the scene, so every question has exactly one answer and
scoring is exact match after normalisation. MATE renders CLEVR 3D scenes (sphere, cube,
cylinder, cone; 8 colours; metal or rubber); here PIL draws their 2D counterparts (circle,
square, rounded rectangle, triangle; metal gets a specular highlight and a dark rim), which keeps
generation dependency-free and instant. Everything derives from one seed: the same seed gives
the same pixels and the same questions, which the eval runner and attack tests rely on.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

from PIL import Image, ImageDraw

SHAPES = ("sphere", "cube", "cylinder", "cone")
COLOURS = {
    "gray": (128, 128, 128),
    "red": (200, 40, 40),
    "blue": (40, 80, 210),
    "green": (40, 160, 70),
    "brown": (130, 85, 40),
    "purple": (130, 50, 170),
    "cyan": (40, 190, 200),
    "yellow": (230, 210, 40),
}
MATERIALS = ("rubber", "metal")
SIZES = {"small": 14, "large": 26}  # half-extent in pixels
IMAGE_ATTRIBUTES = ("colour", "shape", "material", "size")
TEXT_ATTRIBUTES = ("name",)
BACKGROUND = (222, 222, 218)
WIDTH, HEIGHT = 320, 240


@dataclass(frozen=True)
class SceneObject:
    """One object: attributes drawn in the image, name and position written in the text."""

    name: str
    shape: str
    colour: str
    material: str
    size: str
    x: int
    y: int

    def attribute(self, key: str) -> str:
        return str(getattr(self, key))


@dataclass
class Scene:
    seed: int
    objects: list[SceneObject]
    width: int = WIDTH
    height: int = HEIGHT

    def text(self) -> str:
        """The textual modality: names and positions only (what the image does not show)."""
        rows = [{"name": o.name, "x": o.x, "y": o.y} for o in self.objects]
        return json.dumps({"objects": rows}, indent=None)

    def render(self) -> Image.Image:
        """The visual modality: shapes, colours, materials and sizes (no names)."""
        img = Image.new("RGB", (self.width, self.height), BACKGROUND)
        draw = ImageDraw.Draw(img)
        for o in sorted(self.objects, key=lambda o: o.y):  # painter's order: farther (higher) first
            _draw(draw, o)
        return img


@dataclass
class Question:
    """One linking question with its exact answer."""

    id: str
    direction: Literal["image_to_text", "text_to_image"]
    question: str
    answer: str
    pointer: tuple[str, str]  # (attribute, value) that identifies the object
    target: str  # attribute asked for
    object_name: str
    n_objects: int
    scene_seed: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _draw(draw: ImageDraw.ImageDraw, o: SceneObject) -> None:
    r = SIZES[o.size]
    fill = COLOURS[o.colour]
    rim = tuple(int(c * 0.45) for c in fill) if o.material == "metal" else tuple(int(c * 0.8) for c in fill)
    width = 3 if o.material == "metal" else 1
    box = (o.x - r, o.y - r, o.x + r, o.y + r)
    if o.shape == "sphere":
        draw.ellipse(box, fill=fill, outline=rim, width=width)
    elif o.shape == "cube":
        draw.rectangle(box, fill=fill, outline=rim, width=width)
    elif o.shape == "cylinder":
        draw.rounded_rectangle(
            (o.x - int(r * 0.7), o.y - r, o.x + int(r * 0.7), o.y + r),
            radius=r // 2,
            fill=fill,
            outline=rim,
            width=width,
        )
    else:  # cone
        draw.polygon(
            [(o.x, o.y - r), (o.x - r, o.y + r), (o.x + r, o.y + r)], fill=fill, outline=rim, width=width
        )
    if o.material == "metal":  # specular highlight: what makes metal tell apart from rubber
        h = max(3, r // 3)
        hx, hy = o.x - r // 3, o.y - r // 3
        draw.ellipse((hx - h // 2, hy - h // 2, hx + h // 2, hy + h // 2), fill=(250, 250, 250))


def make_scene(seed: int, n_objects: int | None = None) -> Scene:
    """A scene of 3-10 non-overlapping objects, fully determined by `seed`."""
    rng = random.Random(seed)
    n = n_objects if n_objects is not None else rng.randint(3, 10)
    if not 3 <= n <= 10:
        raise ValueError(f"a scene has 3 to 10 objects, not {n}")
    objects: list[SceneObject] = []
    names = rng.sample(range(1, 100), n)
    margin = max(SIZES.values()) + 2
    while len(objects) < n:
        size = rng.choice(sorted(SIZES))
        r = SIZES[size]
        for _ in range(500):
            x, y = rng.randint(margin, WIDTH - margin), rng.randint(margin, HEIGHT - margin)
            if all(
                abs(x - o.x) > r + SIZES[o.size] + 4 or abs(y - o.y) > r + SIZES[o.size] + 4 for o in objects
            ):
                break
        else:  # crowded: restart the layout (still deterministic, the rng moves on)
            objects = []
            continue
        objects.append(
            SceneObject(
                name=f"Object_{names[len(objects)]}",
                shape=rng.choice(SHAPES),
                colour=rng.choice(sorted(COLOURS)),
                material=rng.choice(MATERIALS),
                size=size,
                x=x,
                y=y,
            )
        )
    return Scene(seed=seed, objects=objects)


def _unique(scene: Scene, key: str) -> list[SceneObject]:
    values = [o.attribute(key) for o in scene.objects]
    return [o for o in scene.objects if values.count(o.attribute(key)) == 1]


def questions_for(scene: Scene, rng: random.Random) -> list[Question]:
    """One question each way (when the scene allows it), pointers unique in the scene."""
    out: list[Question] = []
    keys = [k for k in IMAGE_ATTRIBUTES if _unique(scene, k)]
    if keys:  # image -> text: point with a visible attribute, ask for the name
        key = rng.choice(keys)
        obj = rng.choice(_unique(scene, key))
        value = obj.attribute(key)
        phrase = f"the {value} object" if key != "shape" else f"the {value}"
        out.append(
            Question(
                id=f"mate-{scene.seed}-i2t",
                direction="image_to_text",
                question=f"What is the name of {phrase}?",
                answer=obj.name,
                pointer=(key, value),
                target="name",
                object_name=obj.name,
                n_objects=len(scene.objects),
                scene_seed=scene.seed,
            )
        )
    obj = rng.choice(scene.objects)  # text -> image: names are unique; ask a visible attribute
    target = rng.choice(IMAGE_ATTRIBUTES)
    out.append(
        Question(
            id=f"mate-{scene.seed}-t2i",
            direction="text_to_image",
            question=f"What is the {'color' if target == 'colour' else target} of {obj.name}?",
            answer=obj.attribute(target),
            pointer=("name", obj.name),
            target=target,
            object_name=obj.name,
            n_objects=len(scene.objects),
            scene_seed=scene.seed,
        )
    )
    return out


def generate(n_scenes: int, seed: int = 0) -> Iterator[tuple[Scene, list[Question]]]:
    """`n_scenes` scenes with their questions; scene i uses seed `seed * 1_000_003 + i`."""
    for i in range(n_scenes):
        scene_seed = seed * 1_000_003 + i
        scene = make_scene(scene_seed)
        yield scene, questions_for(scene, random.Random(scene_seed ^ 0x5EED))


def normalise(answer: str) -> str:
    """Lower case, no punctuation, no leading article, "grey" = "gray", "colour" words kept."""
    text = re.sub(r"[^\w\s]", " ", answer.lower()).split()
    if text and text[0] in ("the", "a", "an"):
        text = text[1:]
    return " ".join("gray" if w == "grey" else w for w in text)


def exact_match(prediction: str, answer: str) -> bool:
    """MATE's metric: the normalised prediction equals the normalised answer."""
    return normalise(prediction) == normalise(answer)


def score(predictions: dict[str, str], questions: list[Question]) -> dict[str, float]:
    """Exact-match accuracy overall and per direction; unanswered questions count as wrong."""
    result: dict[str, float] = {}
    for name, subset in (
        ("overall", questions),
        ("image_to_text", [q for q in questions if q.direction == "image_to_text"]),
        ("text_to_image", [q for q in questions if q.direction == "text_to_image"]),
    ):
        if subset:
            result[name] = sum(exact_match(predictions.get(q.id, ""), q.answer) for q in subset) / len(subset)
    return result
