"""A numpy ray-caster for MATE scenes: ground plane, cubes, spheres, cylinders; rubber and metal.

Why a ray-caster and not Blender (which CLEVR and MATE use): it installs with numpy, renders a
320x240 scene in tens of milliseconds on one core, and is deterministic to the bit, so a seed
names the pixels. What matters for the benchmark is kept: perspective, shading that tells metal
(mirror-like reflection of a sky gradient, a sharp highlight) from rubber (matte), rotation that
shows on cubes, sizes that shrink with distance. Each object is only intersected with the rays
inside its screen box, and 2x2 supersampling smooths the edges.

Lighting is white, so a pixel of an object is its base colour scaled plus grey: the hue of every
object pixel is the hue of its colour. That is physics of this renderer, not a shortcut for the
solver: a solver still has to find the object and read its colour under shading.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image

from retlink.mate.scene import COLOURS, Camera, Scene, SceneObject

SUPERSAMPLE = 2
LIGHT = np.array([0.55, -0.45, 1.0]) / np.linalg.norm([0.55, -0.45, 1.0])
GROUND_ALBEDO = 0.62
AMBIENT = 0.38
SKY_LOW, SKY_HIGH = 0.55, 0.95


@lru_cache(maxsize=4)
def _rays(camera: Camera, ss: int) -> np.ndarray:
    """Unit ray directions (H*ss, W*ss, 3) through the pixel sample centres."""
    f, r, u = camera.basis()
    w, h = camera.width * ss, camera.height * ss
    xs = ((np.arange(w) + 0.5) / w * 2 - 1) * camera.tan_half
    ys = (1 - (np.arange(h) + 0.5) / h * 2) * camera.tan_half * camera.height / camera.width
    d = f[None, None, :] + xs[None, :, None] * r[None, None, :] + ys[:, None, None] * u[None, None, :]
    d /= np.linalg.norm(d, axis=2, keepdims=True)
    d.setflags(write=False)
    return d


def _rot(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


@lru_cache(maxsize=4)
def _ground(camera: Camera, ss: int) -> np.ndarray:
    """The empty ground (the same for every scene of a camera): a constant Lambert term with a
    gentle fade with distance, as a real photo shows."""
    dirs = _rays(camera, ss)
    with np.errstate(divide="ignore"):
        tg = -camera.position[2] / dirs[:, :, 2]
    dist = np.where(tg > 0, tg, 60.0)
    ground = GROUND_ALBEDO * (AMBIENT + (1 - AMBIENT) * LIGHT[2]) * (1.0 - 0.18 * np.clip((dist - 8) / 10, 0, 1))
    out = np.repeat(ground[:, :, None], 3, axis=2)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=4)
def _ground_small(camera: Camera, ss: int) -> np.ndarray:
    g = _ground(camera, ss)
    out = np.clip(g, 0, 1).reshape(camera.height, ss, camera.width, ss, 3).mean(axis=(1, 3))
    out.setflags(write=False)
    return out


def intersect(o: SceneObject, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, normals) of rays `dirs` (N, 3) from `origin` against one object; t = inf on a miss."""
    centre = np.array([o.x, o.y, o.z])
    rel = origin - centre
    n = dirs.shape[0]
    t = np.full(n, np.inf)
    normal = np.zeros((n, 3))
    s = o.size
    if o.shape == "sphere":
        b = dirs @ rel
        c = rel @ rel - s * s
        disc = b * b - c
        hit = disc >= 0
        th = -b[hit] - np.sqrt(disc[hit])
        t[hit] = np.where(th > 0, th, np.inf)
        p = origin + dirs * np.where(np.isfinite(t), t, 0)[:, None] - centre
        normal = p / s
    elif o.shape == "cylinder":
        dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
        a = dx * dx + dy * dy
        b = 2 * (rel[0] * dx + rel[1] * dy)
        c = rel[0] ** 2 + rel[1] ** 2 - s * s
        disc = b * b - 4 * a * c
        ok = (disc >= 0) & (a > 1e-12)
        side = np.full(n, np.inf)
        side[ok] = (-b[ok] - np.sqrt(disc[ok])) / (2 * a[ok])
        zs = rel[2] + side * dz
        side = np.where((side > 0) & (np.abs(zs) <= s), side, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            cap = (s - rel[2]) / dz
        px, py = rel[0] + cap * dx, rel[1] + cap * dy
        cap = np.where((cap > 0) & (px * px + py * py <= s * s), cap, np.inf)
        t = np.minimum(side, cap)
        p = origin + dirs * np.where(np.isfinite(t), t, 0)[:, None] - centre
        normal = np.where(
            (cap <= side)[:, None], np.array([0.0, 0.0, 1.0]), np.stack([p[:, 0], p[:, 1], np.zeros(n)], 1) / s
        )
    else:  # cube: slabs in the object's frame
        r = _rot(o.rotation)
        lo_rel, ld = rel @ r, dirs @ r  # world -> local is R^T: (R^T v) = v @ R
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-s - lo_rel) / ld
            t2 = (s - lo_rel) / ld
        tnear, tfar = np.minimum(t1, t2), np.maximum(t1, t2)
        tmin, tmax = tnear.max(axis=1), tfar.min(axis=1)
        t = np.where((tmax >= tmin) & (tmin > 0), tmin, np.inf)
        axis = tnear.argmax(axis=1)
        local = np.zeros((n, 3))
        local[np.arange(n), axis] = -np.sign(ld[np.arange(n), axis])
        normal = local @ r.T
    return t, normal


def silhouette(o: SceneObject, camera: Camera, box: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels of box (x0, y0, x1, y1) whose centre ray hits `o` (one ray a pixel)."""
    x0, y0, x1, y1 = box
    dirs = _rays(camera, 1)[y0:y1, x0:x1].reshape(-1, 3)
    t, _ = intersect(o, np.array(camera.position), dirs)
    return np.isfinite(t).reshape(y1 - y0, x1 - x0)


def _shade(o: SceneObject, normals: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    base = np.array(COLOURS[o.color]) / 255.0
    ndl = np.clip(normals @ LIGHT, 0, None)[:, None]
    half = LIGHT[None, :] - dirs
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    ndh = np.clip(np.sum(normals * half, axis=1), 0, None)[:, None]
    if o.material == "metal":
        refl = dirs - 2 * np.sum(dirs * normals, axis=1, keepdims=True) * normals
        env = np.where(refl[:, 2:3] > 0, SKY_LOW + (SKY_HIGH - SKY_LOW) * refl[:, 2:3], GROUND_ALBEDO * 0.8)
        colour = base * (0.10 + 0.30 * ndl) + base * 0.75 * env + 0.85 * ndh**80
    else:
        colour = base * (0.28 + 0.72 * ndl) + 0.05 * ndh**6
    return colour


def render_array(scene: Scene, ss: int = SUPERSAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float image (H, W, 3) in [0, 1], object-id buffer at full resolution (H*ss, W*ss),
    -1 for the ground)."""
    cam = scene.camera
    dirs = _rays(cam, ss)
    h, w = dirs.shape[:2]
    origin = np.array(cam.position)
    img = _ground(cam, ss).copy()
    depth = np.full((h, w), np.inf)
    ids = np.full((h, w), -1, dtype=np.int16)
    for k, (o, box) in enumerate(zip(scene.objects, scene.screen_boxes(), strict=True)):
        x0, y0 = max(0, int(box[0] * ss) - 2), max(0, int(box[1] * ss) - 2)
        x1, y1 = min(w, math.ceil(box[2] * ss) + 2), min(h, math.ceil(box[3] * ss) + 2)
        if x1 <= x0 or y1 <= y0:
            continue
        region = dirs[y0:y1, x0:x1].reshape(-1, 3)
        t, normals = intersect(o, origin, region)
        t = t.reshape(y1 - y0, x1 - x0)
        closer = t < depth[y0:y1, x0:x1]
        if not closer.any():
            continue
        shaded = _shade(o, normals.reshape(-1, 3)[closer.ravel()], region[closer.ravel()])
        depth[y0:y1, x0:x1][closer] = t[closer]
        ids[y0:y1, x0:x1][closer] = k
        img[y0:y1, x0:x1][closer] = shaded
    # downsample only where objects are (the rest is the cached empty ground)
    out = _ground_small(cam, ss).copy()
    for box in scene.screen_boxes():
        x0, y0 = max(0, int(box[0]) - 2), max(0, int(box[1]) - 2)
        x1, y1 = min(cam.width, math.ceil(box[2]) + 2), min(cam.height, math.ceil(box[3]) + 2)
        if x1 > x0 and y1 > y0:
            patch = np.clip(img[y0 * ss : y1 * ss, x0 * ss : x1 * ss], 0, 1)
            out[y0:y1, x0:x1] = patch.reshape(y1 - y0, ss, x1 - x0, ss, 3).mean(axis=(1, 3))
    return out, ids


def render(scene: Scene) -> Image.Image:
    """The scene as an 8-bit RGB image (the visual modality)."""
    img, _ = render_array(scene)
    return Image.fromarray(np.round(img * 255).astype(np.uint8), "RGB")


def visible_pixels(scene: Scene) -> np.ndarray:
    """Pixels (at supersampled resolution) each object covers in the rendered image."""
    _, ids = render_array(scene)
    return np.bincount(ids[ids >= 0].ravel(), minlength=len(scene.objects))
