"""Hostile inputs shared by the bad-input regression tests and the fuzz suite."""

from __future__ import annotations

import struct
import zlib


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A ~70-byte PNG whose header declares `width`x`height` RGB pixels (30000x30000 is past
    PIL's own decompression-bomb limit, so `Image.open` itself refuses it)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + png_chunk(b"IEND", b"")
    )
