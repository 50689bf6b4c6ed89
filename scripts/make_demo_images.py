"""Regenerate the demo images in src/retlink/data/demo/ from scikit-image's bundled sample photos.

Query images are the whole photo; KB images are other views of it (crops, mirror, grey),
so image retrieval has to match a different picture of the same thing, and look-alike
distractors (tabby cat, espresso, Falcon Heavy, Michael Collins) get views of the same photo.
The sample photos are public domain or freely licensed (see skimage.data's docstrings).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data as data
from PIL import Image, ImageOps

OUT = Path(__file__).resolve().parent.parent / "src" / "retlink" / "data" / "demo"
MAX_SIDE = 320

QUERIES = [
    "chelsea", "coffee", "rocket", "astronaut", "camera", "hubble_deep_field", "retina",
    "immunohistochemistry", "moon", "coins", "horse", "brick",
]  # fmt: skip

# entity id -> (source photo, crop box as fractions (l, t, r, b), mirror, greyscale)
KB_VIEWS = {
    "chelsea_cat": ("chelsea", (0.10, 0.05, 0.90, 0.95), True, False),
    "tabby_cat": ("chelsea", (0.00, 0.30, 0.55, 1.00), False, False),
    "java_coffee": ("coffee", (0.05, 0.05, 0.85, 0.95), True, False),
    "espresso": ("coffee", (0.20, 0.20, 0.75, 0.80), False, False),
    "falcon_9": ("rocket", (0.15, 0.00, 0.85, 0.90), True, False),
    "falcon_heavy": ("rocket", (0.00, 0.30, 0.60, 1.00), False, True),
    "eileen_collins": ("astronaut", (0.10, 0.00, 0.90, 0.85), True, False),
    "michael_collins": ("astronaut", (0.25, 0.10, 1.00, 1.00), False, True),
    "cameraman_image": ("camera", (0.05, 0.05, 0.90, 0.90), True, False),
    "hubble_telescope": ("hubble_deep_field", (0.10, 0.10, 0.80, 0.80), True, False),
    "retina": ("retina", (0.10, 0.10, 0.90, 0.90), True, False),
    "immunohistochemistry": ("immunohistochemistry", (0.15, 0.15, 0.95, 0.95), True, False),
    "moon": ("moon", (0.00, 0.10, 0.85, 0.95), True, False),
    "ancient_drachma": ("coins", (0.05, 0.05, 0.90, 0.90), True, False),
    "mustang_horse": ("horse", (0.05, 0.05, 0.95, 0.95), True, False),
    "brick": ("brick", (0.20, 0.20, 0.90, 0.90), True, False),
}


def photo(name: str) -> Image.Image:
    arr = getattr(data, name)()
    if arr.dtype == bool:
        arr = (~arr).astype(np.uint8) * 255  # skimage's horse is a boolean mask: dark horse on white
    img = Image.fromarray(arr).convert("RGB")
    img.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return img


def view(img: Image.Image, box, mirror: bool, grey: bool) -> Image.Image:
    w, h = img.size
    out = img.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))
    if mirror:
        out = ImageOps.mirror(out)
    if grey:
        out = ImageOps.grayscale(out).convert("RGB")
    return out


def main() -> None:
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    (OUT / "kb_images").mkdir(parents=True, exist_ok=True)
    for name in QUERIES:
        photo(name).save(OUT / "images" / f"{name}.jpg", quality=90)
    for entity_id, (name, box, mirror, grey) in KB_VIEWS.items():
        view(photo(name), box, mirror, grey).save(OUT / "kb_images" / f"{entity_id}.jpg", quality=90)


if __name__ == "__main__":
    main()
