"""MATE scenes: CLEVR-like 3D objects on a ground plane, the camera that sees them, the text.

After MATE (Alonso et al., "Vision-Language Models Struggle to Align Entities across
Modalities", ACL 2025, arXiv 2503.03854). Attributes are split by modality as in the paper:

- visual-only (drawn in the image, absent from the text): colour, shape;
- textual-only (in the JSON text, not readable from the image): name, rotation, size (a number),
  3D coordinates;
- shared (both): material; never a pointer or a target.

The coordinate system is the paper's: X is depth (smaller is farther from the camera), Y is
left (negative) to right (positive), Z is the height of the object's centre. The camera sits on
the X axis looking back towards the origin, so Y = 0 is the middle of the image. It is fixed for
the benchmark (recorded in the manifest), like a camera calibration a solver may know; each
scene's objects are its only random part.

No object hides another: objects are placed so that their projected screen boxes are disjoint,
which the renderer's own object-id buffer then confirms.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

SHAPES = ("cube", "sphere", "cylinder")
#: CLEVR's eight colours (sRGB 0-255)
COLOURS: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
MATERIALS = ("rubber", "metal")
VISUAL_ONLY = ("color", "shape")
TEXTUAL_ONLY = ("name", "3d_coords", "rotation", "size")
SHARED = ("material",)
#: size is a continuous radius-like extent; MATE calls < 0.5 "small", the rest "large"
SIZE_RANGE = (0.35, 0.75)
SMALL_BELOW = 0.5
#: where objects may stand (ground-plane box, world units)
X_RANGE = (-3.0, 3.0)
Y_RANGE = (-3.0, 3.0)
#: pixels kept free around each object's silhouette (objects never touch in the image)
GAP_PX = 2


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: position, look-at point, horizontal field of view, image size."""

    position: tuple[float, float, float] = (9.0, 0.0, 8.0)
    look_at: tuple[float, float, float] = (-0.5, 0.0, 0.0)
    fov_deg: float = 48.0
    width: int = 320
    height: int = 240

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(forward, right, up) unit vectors; right is +Y as the paper's coordinates say."""
        return _basis(self)

    @property
    def tan_half(self) -> float:
        return math.tan(math.radians(self.fov_deg) / 2)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates (N, 2) (x to the right, y down, pixel centres
        at +0.5)."""
        f, r, u = self.basis()
        d = np.atleast_2d(points) - np.array(self.position)
        z = d @ f
        x = (d @ r) / z / self.tan_half
        y = (d @ u) / z / (self.tan_half * self.height / self.width)
        return np.stack([(x + 1) / 2 * self.width, (1 - y) / 2 * self.height], axis=1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Camera:
        """The camera of a set's manifest (`to_dict`'s JSON, lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@lru_cache(maxsize=8)
def _basis(camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c, t = np.array(camera.position), np.array(camera.look_at)
    f = (t - c) / np.linalg.norm(t - c)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    return f, r, np.cross(r, f)


def project_point(camera: Camera, x: float, y: float, z: float) -> tuple[float, float]:
    """`Camera.project` for one point in plain floats (the layout loop calls it thousands of times)."""
    f, r, u = (v.tolist() for v in camera.basis())
    px, py, pz = camera.position
    d = (x - px, y - py, z - pz)
    depth = d[0] * f[0] + d[1] * f[1] + d[2] * f[2]
    sx = (d[0] * r[0] + d[1] * r[1] + d[2] * r[2]) / depth / camera.tan_half
    sy = (d[0] * u[0] + d[1] * u[1] + d[2] * u[2]) / depth / (camera.tan_half * camera.height / camera.width)
    return (sx + 1) / 2 * camera.width, (1 - sy) / 2 * camera.height


CAMERA = Camera()


@dataclass(frozen=True)
class SceneObject:
    """One object with every attribute, both modalities' (the renderer's ground truth)."""

    name: str
    shape: str
    color: str
    material: str
    size: float
    rotation: int
    x: float
    y: float

    @property
    def z(self) -> float:
        """Objects rest on the ground: the centre is one half-extent up."""
        return self.size

    @property
    def coords(self) -> list[float]:
        return [round(self.x, 2), round(self.y, 2), round(self.z, 2)]

    def value(self, attribute: str) -> object:
        """The value of an attribute in the paper's names (`3d_coords`, `color`, ...)."""
        if attribute == "3d_coords":
            return self.coords
        return getattr(self, attribute)

    def text_record(self) -> dict:
        """What the JSON text says about this object: every attribute but the visual-only ones."""
        return {
            "name": self.name,
            "3d_coords": self.coords,
            "rotation": self.rotation,
            "size": self.size,
            "material": self.material,
        }

    def corners(self) -> np.ndarray:
        """A world-space box that holds the object (8 corners), for screen bounds."""
        s = self.size
        a = math.radians(self.rotation) if self.shape == "cube" else 0.0
        c, n = math.cos(a), math.sin(a)
        return np.array(
            [
                [self.x + c * dx - n * dy, self.y + n * dx + c * dy, self.z + dz]
                for dx in (-s, s)
                for dy in (-s, s)
                for dz in (-s, s)
            ]
        )


@dataclass
class Scene:
    """Objects in the order the text lists them (shuffled, so order leaks nothing)."""

    objects: list[SceneObject]
    camera: Camera = field(default_factory=Camera)

    def text(self, fmt: str = "json") -> str:
        """The textual modality: the scene without the visual-only attributes, as JSON (what a
        set stores) or another format of `retlink.mate.scene_text`."""
        from retlink.mate.scene_text import write

        return write([o.text_record() for o in self.objects], fmt)

    def ground_truth(self) -> dict:
        """Every attribute of every object plus the camera (for tests and analysis, never for a solver)."""
        return {"camera": self.camera.to_dict(), "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_ground_truth(cls, data: dict) -> Scene:
        return cls([SceneObject(**o) for o in data["objects"]], Camera(**data["camera"]))

    def by_name(self, name: str) -> SceneObject:
        return next(o for o in self.objects if o.name == name)

    def screen_boxes(self) -> np.ndarray:
        """(N, 4) pixel boxes x0, y0, x1, y1 that hold each object's projection."""
        boxes = []
        for o in self.objects:
            p = self.camera.project(o.corners())
            boxes.append([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])
        return np.array(boxes)


def _boxes_apart(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    return a[2] + margin < b[0] or b[2] + margin < a[0] or a[3] + margin < b[1] or b[3] + margin < a[1]


@dataclass(frozen=True)
class Reserve:
    """A uniqueness requirement: object `index` holds a value of `attribute` no other object has."""

    index: int
    attribute: str  # "color" or "shape" (textual attributes are unique by construction)


def is_small(size: float) -> bool:
    return size < SMALL_BELOW
