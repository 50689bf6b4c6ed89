"""Fuzz the image loader (`retlink.tools.images.load_image`), the one door every image of the
CLI, the Python API, the endpoint, `kb build` and the eval runner comes through.

Seeds are real encodings in many shapes (PNG 8/16-bit, palette, LA, JPEG RGB/CMYK/grey, EXIF
orientations, animated GIF and PNG, BMP, TIFF, WebP, ICO), then mangled: truncated, bytes
flipped, a declared size rewritten (small bombs and huge ones), chunks spliced. The property:
an RGB image within the limits, or a `RetlinkError`; nothing else, ever.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from retlink.core.errors import ImageTooLargeError, RetlinkError
from retlink.tools.images import load_image
from tests.fuzz.image_strategies import mangled
from tests.hostile.common import bomb_png

MAX_PIXELS = 1_000_000  # the property is the parser's, not the limit's: keep decoding cheap


def check(image) -> None:
    try:
        out = load_image(image, max_pixels=MAX_PIXELS, max_bytes=1 << 20)
    except RetlinkError:
        return
    assert out.mode == "RGB" and out.width * out.height <= MAX_PIXELS


@given(mangled())
def test_mangled_image_bytes(data):
    check(data)


@given(st.binary(max_size=512))
def test_random_bytes(data):
    check(data)


@given(mangled())
def test_mangled_image_files(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("img") / "x.img"
    path.write_bytes(data)
    check(path)


@given(
    shape=st.lists(st.integers(0, 40), min_size=0, max_size=5).map(tuple),
    dtype=st.sampled_from(["uint8", "uint16", "int32", "float32", "float64", "bool", "complex64"]),
    special=st.sampled_from([None, np.nan, np.inf, -1.0, 1e30]),
)
def test_arrays_of_any_shape_and_dtype(shape, dtype, special):
    arr = np.ones(shape, dtype=dtype)
    if special is not None and arr.size and np.issubdtype(arr.dtype, np.floating):
        arr.flat[0] = special
    check(arr)


def test_bombs_are_too_large_not_corrupt():
    """The named property behind the 'bomb-png' seed: a declared size past the limit is
    refused as too large whatever PIL's own limit (see test_hostile_input for the entry points)."""
    for side in (2_000, 30_000, 65_535):
        with pytest.raises(ImageTooLargeError):
            load_image(bomb_png(side, side), max_pixels=MAX_PIXELS)
