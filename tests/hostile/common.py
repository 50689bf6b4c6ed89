"""Hostile inputs shared by the bad-input regression tests and the fuzz suite."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
ENTITIES = SRC / "retlink" / "data" / "demo" / "entities.jsonl"
DEMO_CONFIG = SRC / "retlink" / "eval" / "configs" / "benchmarks" / "demo.yaml"


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


def run_cli(*args: str, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`retlink ARGS` as a user runs it: a real process through the console entry point (whose
    one-line usage errors only the entry point gives), this checkout's code first."""
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = "import sys; from retlink.cli import app; sys.argv[0] = 'retlink'; app()"
    argv = [os.fsencode(a) if isinstance(a, str) else a for a in args]
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, env=env, capture_output=True, timeout=timeout)


def assert_refused(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one line on stderr, no traceback; returns that line."""
    err = res.stderr.decode(errors="replace").strip()
    assert res.returncode == 2, (res.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err
