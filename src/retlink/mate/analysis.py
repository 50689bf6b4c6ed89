"""What a MATE question offers a guesser and which attributes single its object out.

Two analyses of the paper (Alonso et al., ACL 2025, arXiv 2503.03854), computed per question
when it is answered and kept in its record, so that the report needs the records only:

- `chance`: the exact expected accuracy of guessing uniformly among the admissible answers. The
  prompt lists the options of a visual target (8 colours, 3 shapes); a textual target (name,
  coordinates, rotation, size) is one of the values the scene's objects have, so its answer
  space is the scene's distinct values. Averaged over the questions a run asked, it is the run's
  random baseline (the paper prints one constant, 22.0%, for its set).
- `unique_by`: every combination of up to three attributes (of `LINK_ATTRIBUTES`) whose values
  the question's object has and no other object of its scene shares: the combinations that
  disambiguate it. The report counts how often each combination does and how accurate a model
  is on those questions. Exact 3D coordinates and names are unique by construction (they would
  single out every object), so coordinates enter as a coarse position: which ninth of the ground
  the object stands on (depth and side, each in thirds), the way a person reads a position.
"""

from __future__ import annotations

import itertools
from typing import Any

from retlink.mate.questions import Question, exact_match, normalise
from retlink.mate.scene import COLOURS, SHAPES, X_RANGE, Y_RANGE, Scene, SceneObject, is_small

#: the attributes of the combination analysis (size as MATE's small / large class)
LINK_ATTRIBUTES = ("color", "shape", "material", "size_class", "position")
MAX_COMBINATION = 3
#: every combination of 1 to 3 attributes, as "color+material" names, smaller ones first
COMBINATIONS: tuple[str, ...] = tuple(
    "+".join(c) for k in range(1, MAX_COMBINATION + 1) for c in itertools.combinations(LINK_ATTRIBUTES, k)
)
#: visual targets: the prompt lists their options
_LISTED = {"color": len(COLOURS), "shape": len(SHAPES)}


def chance(q: Question) -> float:
    """1 / the number of admissible answers of `q`: uniform guessing's exact expected accuracy."""
    target = q.target["attribute"]
    if target in _LISTED:
        return 1.0 / _LISTED[target]
    values = {normalise(v) for v in q.scene_values} | {normalise(q.answer)}
    return 1.0 / len(values)


def _third(value: float, lo: float, hi: float) -> int:
    return min(2, max(0, int(3 * (value - lo) / (hi - lo))))


def attribute(o: SceneObject, name: str) -> Any:
    """The value of one analysis attribute of `o` (`LINK_ATTRIBUTES`)."""
    if name == "size_class":
        return "small" if is_small(o.size) else "large"
    if name == "position":  # (depth third, side third) of the ground box
        return _third(o.x, *X_RANGE), _third(o.y, *Y_RANGE)
    return getattr(o, name)


def unique_by(gold: SceneObject, scene: Scene) -> list[str]:
    """The combinations (of `COMBINATIONS`) whose values no other object of `scene` shares with `gold`."""
    others = [o for o in scene.objects if o is not gold]
    out = []
    for combo in COMBINATIONS:
        attrs = combo.split("+")
        key = tuple(attribute(gold, a) for a in attrs)
        if all(tuple(attribute(o, a) for a in attrs) != key for o in others):
            out.append(combo)
    return out


def gold_object(q: Question, scene: Scene) -> SceneObject | None:
    """The object `q` points at: the one whose pointer attribute has the pointer value (unique)."""
    attr, value = q.pointer["attribute"], q.pointer["value"]
    found = [o for o in scene.objects if exact_match(o.value(attr), value)]
    return found[0] if len(found) == 1 else None
