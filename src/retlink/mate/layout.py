"""The layout of a MATE scene: its objects' appearance drawn, then each object dropped at random
spots until its rendered silhouette (grown by `GAP_PX`) is inside the image and touches no other.

Apart from `scene.py` (what a scene is) because placing an object needs the renderer's
silhouettes (`render.silhouette`), and the renderer needs the scene's types: scene <- render <-
layout, no cycle.
"""

from __future__ import annotations

import random

import numpy as np

from retlink.mate.render import silhouette
from retlink.mate.scene import (
    CAMERA,
    COLOURS,
    GAP_PX,
    MATERIALS,
    SHAPES,
    SIZE_RANGE,
    X_RANGE,
    Y_RANGE,
    Camera,
    Reserve,
    Scene,
    SceneObject,
    project_point,
)


def sample_scene(rng: random.Random, n_objects: int, reserves: list[Reserve], camera: Camera = CAMERA) -> Scene:
    """A scene of `n_objects` objects where each reserved object's value is unique in its attribute.

    Appearance first (reserved objects take distinct values, the others draw from what is
    left), then the layout: each object is dropped at random spots until its silhouette, grown
    by `GAP_PX`, touches no silhouette already placed and lies inside the image. So no object
    occludes or touches another. Names, rotations, sizes and (rounded) coordinates are distinct
    across objects, so every textual attribute identifies one object.
    """
    if not 3 <= n_objects <= 10:
        raise ValueError(f"a MATE scene has 3 to 10 objects, not {n_objects}")
    shapes = _assign(rng, n_objects, SHAPES, [r.index for r in reserves if r.attribute == "shape"])
    colors = _assign(rng, n_objects, tuple(COLOURS), [r.index for r in reserves if r.attribute == "color"])
    materials = [rng.choice(MATERIALS) for _ in range(n_objects)]
    names = rng.sample(range(n_objects), n_objects)
    rotations = rng.sample(range(360), n_objects)
    while True:
        sizes = [round(rng.uniform(*SIZE_RANGE), 2) for _ in range(n_objects)]
        if len(set(sizes)) == n_objects:
            break
    occupied = np.zeros((camera.height, camera.width), dtype=bool)
    objects: list[SceneObject | None] = [None] * n_objects
    # big objects first: they are the hard ones to fit
    for i in sorted(range(n_objects), key=lambda i: -sizes[i]):
        for _ in range(2000):
            o = SceneObject(
                name=f"Object_{names[i]}",
                shape=shapes[i],
                color=colors[i],
                material=materials[i],
                size=sizes[i],
                rotation=rotations[i],
                x=rng.uniform(*X_RANGE),
                y=rng.uniform(*Y_RANGE),
            )
            if _place(o, camera, occupied):
                objects[i] = o
                break
        else:  # crowded: start again (deterministic, the rng has moved on)
            return sample_scene(rng, n_objects, reserves, camera)
    # the list (and the text) keeps index order: object i is random in every attribute, so the
    # order leaks nothing, and `reserves` keep naming their objects
    done = [o for o in objects if o is not None]
    if len({tuple(o.coords) for o in done}) < n_objects:
        return sample_scene(rng, n_objects, reserves, camera)
    return Scene(done, camera)


def _place(o: SceneObject, camera: Camera, occupied: np.ndarray) -> bool:
    """Mark `o`'s silhouette (grown by GAP_PX) in `occupied` if it is inside the image and free."""
    # cheap rejections first: points surely inside the object (its centre, and 0.7 of its
    # half-extent along each ground axis) must land inside the image on free pixels
    reach = 0.7 * o.size
    for dx, dy in ((0.0, 0.0), (reach, 0.0), (-reach, 0.0), (0.0, reach), (0.0, -reach)):
        cx, cy = project_point(camera, o.x + dx, o.y + dy, o.z)
        if not (0 <= cx < camera.width and 0 <= cy < camera.height) or occupied[int(cy), int(cx)]:
            return False
    p = camera.project(o.corners())
    x0, y0 = int(np.floor(p[:, 0].min())), int(np.floor(p[:, 1].min()))
    x1, y1 = int(np.ceil(p[:, 0].max())), int(np.ceil(p[:, 1].max()))
    if x0 < GAP_PX or y0 < GAP_PX or x1 > camera.width - GAP_PX or y1 > camera.height - GAP_PX:
        return False
    g = GAP_PX
    window = occupied[y0 - g : y1 + g, x0 - g : x1 + g]
    grown = _grow(silhouette(o, camera, (x0, y0, x1, y1)), g)
    if window.any() and (grown & window).any():
        return False
    window |= grown
    return True


def _grow(mask: np.ndarray, g: int) -> np.ndarray:
    """`mask` padded by g on every side and dilated by g pixels (a square, done row then column)."""
    h, w = mask.shape
    rows = np.zeros((h, w + 2 * g), dtype=bool)
    for dx in range(2 * g + 1):
        rows[:, dx : dx + w] |= mask
    out = np.zeros((h + 2 * g, w + 2 * g), dtype=bool)
    for dy in range(2 * g + 1):
        out[dy : dy + h] |= rows
    return out


def _assign(rng: random.Random, n: int, values: tuple[str, ...], unique: list[int]) -> list[str]:
    """Values for n objects; each index in `unique` gets a value nobody else has."""
    if len(unique) > len(values) - (1 if n > len(unique) else 0):
        raise ValueError(f"cannot make {len(unique)} objects unique among {len(values)} values")
    reserved = rng.sample(values, len(unique))
    rest = [v for v in values if v not in reserved]
    out = [rng.choice(rest) if rest else "" for _ in range(n)]
    for i, v in zip(unique, reserved, strict=True):
        out[i] = v
    return out
