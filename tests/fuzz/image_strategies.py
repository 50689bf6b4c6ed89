"""Hypothesis strategies of mangled image bytes, shared by the image-loader fuzz tests and the
chat-request fuzz tests (whose data URIs carry them).

Seeds are real encodings in many shapes (PNG 8/16-bit, palette, LA, JPEG RGB/CMYK/grey, EXIF
orientations, animated GIF and PNG, BMP, TIFF, WebP, ICO), then mangled: truncated, bytes
flipped, a declared size rewritten (small bombs and huge ones), chunks spliced.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from tests.hostile.common import bomb_png, png_chunk


def _encode(fmt: str, mode: str, size: tuple[int, int], seed: int, **save) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _animated(fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    frames = [Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)) for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def _png16(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 65535, (10, 14), dtype=np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


SEEDS = {
    "png-rgb": lambda s: _encode("PNG", "RGB", (17, 11), s),
    "png-rgba": lambda s: _encode("PNG", "RGBA", (9, 13), s),
    "png-la": lambda s: _encode("PNG", "LA", (9, 9), s),
    "png-palette": lambda s: _encode("PNG", "P", (16, 10), s),
    "png-16bit": _png16,
    "png-1bit": lambda s: _encode("PNG", "1", (16, 16), s),
    "jpeg": lambda s: _encode("JPEG", "RGB", (24, 16), s, quality=70),
    "jpeg-grey": lambda s: _encode("JPEG", "L", (16, 16), s),
    "jpeg-cmyk": lambda s: _encode("JPEG", "CMYK", (16, 12), s),
    "jpeg-exif": lambda s: _encode("JPEG", "RGB", (20, 10), s, exif=_exif(1 + s % 8)),
    "jpeg-progressive": lambda s: _encode("JPEG", "RGB", (32, 24), s, progressive=True),
    "gif-animated": lambda s: _animated("GIF", s),
    "png-animated": lambda s: _animated("PNG", s),
    "webp": lambda s: _encode("WEBP", "RGB", (16, 16), s),
    "bmp": lambda s: _encode("BMP", "RGB", (10, 10), s),
    "tiff-cmyk": lambda s: _encode("TIFF", "CMYK", (10, 8), s),
    "tiff-16": lambda s: _encode("TIFF", "I;16", (10, 8), s),
    "ico": lambda s: _encode("ICO", "RGBA", (16, 16), s),
    "bomb-png": lambda s: bomb_png(30_000 + s, 30_000),
}


@st.composite
def mangled(draw) -> bytes:
    kind = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[kind](draw(st.integers(0, 7))))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "size", "splice", "insert"]))
        if not data:
            break
        if op == "truncate":
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif op == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "size" and len(data) > 24:
            # where the common formats keep width/height (PNG IHDR at 16, GIF at 6, BMP at 18)
            at = draw(st.sampled_from([16, 20, 6, 8, 18, 22]))
            value = draw(st.sampled_from([0, 1, 7, 255, 65535, 2**31 - 1, 2**32 - 1]))
            data[at : at + 4] = struct.pack(">I", value)
        elif op == "splice":
            i = draw(st.integers(0, len(data)))
            data[i:i] = png_chunk(b"IDAT", draw(st.binary(max_size=64)))
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
    return bytes(data)
