import io

import numpy as np
import pytest
import torch
from PIL import Image

from retlink.core.errors import ImageTooLargeError, InvalidImageError
from retlink.tools.images import load_image, to_tensor


def _jpeg_bytes(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_accepts_every_input_kind(tmp_path, demo_dir):
    path = demo_dir / "images" / "chelsea.jpg"
    from_path = load_image(path)
    assert from_path.mode == "RGB"
    assert load_image(str(path)).size == from_path.size
    assert load_image(path.read_bytes()).size == from_path.size
    assert load_image(from_path.convert("L")).mode == "RGB"
    arr = np.asarray(from_path)
    assert load_image(arr).size == from_path.size
    t = to_tensor(from_path)
    assert t.shape == (3, from_path.height, from_path.width) and float(t.max()) <= 1.0
    back = load_image(t)
    assert np.abs(np.asarray(back, dtype=int) - arr.astype(int)).max() <= 1
    assert load_image(t.unsqueeze(0)).size == from_path.size


def test_missing_file(tmp_path):
    with pytest.raises(InvalidImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(InvalidImageError, match="not a file"):
        load_image(tmp_path)


def test_non_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture")
    with pytest.raises(InvalidImageError, match="not an image"):
        load_image(p)


def test_truncated_image():
    data = _jpeg_bytes((256, 256))
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_pixel_limit_checked_before_decoding():
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        load_image(_jpeg_bytes((400, 300)), max_pixels=100_000)


def test_byte_limit(tmp_path):
    p = tmp_path / "big.jpg"
    p.write_bytes(_jpeg_bytes((300, 300)))
    with pytest.raises(ImageTooLargeError, match="bytes"):
        load_image(p, max_bytes=100)


def test_tiny_empty_and_odd_inputs():
    with pytest.raises(InvalidImageError, match="smaller than"):
        load_image(Image.new("RGB", (2, 2)))
    with pytest.raises(InvalidImageError, match="empty"):
        load_image(b"")
    with pytest.raises(InvalidImageError, match="no image"):
        load_image(None)
    with pytest.raises(InvalidImageError, match="unsupported image type"):
        load_image(12345)
    with pytest.raises(InvalidImageError, match="NaN"):
        load_image(torch.full((3, 16, 16), float("nan")))
    with pytest.raises(InvalidImageError, match="shape"):
        load_image(np.zeros((2, 3, 4, 5)))
