"""Images: high bit depths scaled, never clipped (issue 32, defect 8)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from retlink.tools.images import load_image


def _gradient_png(tmp_path):
    arr = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (32, 1))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    path = tmp_path / "g16.png"
    path.write_bytes(buf.getvalue())
    return path, arr


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    path, arr = _gradient_png(tmp_path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(load_image(path))
    assert rgb.shape == (32, 256, 3)
    expected = np.rint(arr.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], expected)
    assert (rgb == 255).mean() < 0.01


def test_16_bit_array_is_scaled_too():
    arr = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    assert np.asarray(load_image(arr))[0, :, 0].max() == 255
    assert np.asarray(load_image(arr))[0, 32, 0] == round(int(arr[0, 32]) * 255 / 65535)
