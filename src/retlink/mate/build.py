"""`retlink mate build`: the MATE set on disk (PNG + JSON per scene, questions, manifest), and
`MateSet`, the loader of such a folder.

Layout of a built folder:

    manifest.json        format, seed, counts per task and object count, the camera, checksums
    questions.jsonl      one question a line (cross-modal and controls), in a seeded mixed order
    scenes/NNNNN.png     the visual modality
    scenes/NNNNN.json    the textual modality: the scene as JSON without colour and shape
    truth/NNNNN.json     every attribute of every object and the camera (tests, analysis; a
                         solver must never read it)

The folder is written as DIR.partial and renamed when complete, so a half-built set is never
mistaken for a set. Scene i depends only on (seed, i), so `--workers` changes the speed and
nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retlink.core.errors import ConfigError, DatasetError
from retlink.core.outdirs import (
    check_out_dir,
    check_replaceable,
    remove_partial,
    swap_into_place,
    write_marker,
)
from retlink.mate.questions import Question, make_question, plan
from retlink.mate.scene import CAMERA, Scene

log = logging.getLogger(__name__)

FORMAT = "retlink-mate/1"
MANIFEST = "manifest.json"
QUESTIONS = "questions.jsonl"
#: the paper's size; the controls default to a fifth of it
DEFAULT_N = 5500


def _make(args: tuple[int, str, Any, int, str]) -> dict[str, Any]:
    """Generate and write one question's scene; returns the question as a dict (worker body)."""
    from retlink.mate.render import render

    index, split, config, seed, out = args
    q, scene = make_question(index, split, config, seed)
    folder = Path(out)
    render(scene).save(folder / "scenes" / f"{q.scene}.png", optimize=False, compress_level=6)
    (folder / "scenes" / f"{q.scene}.json").write_text(scene.text() + "\n")
    (folder / "truth" / f"{q.scene}.json").write_text(json.dumps(scene.ground_truth()) + "\n")
    return q.to_dict()


#: the most questions (or controls) a set may ask for: the paper's set is 5,500
MAX_QUESTIONS = 1_000_000
#: the marker kind of a MATE set folder (`retlink.core.outdirs`)
MATE_KIND = "mate-set"


def max_workers() -> int:
    """The most worker processes a build may start: this machine's usable cores."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def check_workers(workers: int) -> None:
    """A ConfigError unless 1 <= workers <= cores: each worker is a process (a fork storm)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= max_workers():
        raise ConfigError(f"--workers must be 1 to {max_workers()} (this machine's cores), not {workers}")


def _legacy_set(folder: Path) -> bool:
    """A MATE set built before the marker: its manifest names this format."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def build(
    out: str | Path,
    n: int = DEFAULT_N,
    *,
    n_controls: int | None = None,
    seed: int = 0,
    first: int | None = None,
    workers: int = 1,
    progress: Any = None,
) -> dict[str, Any]:
    """Write the set into `out` (replaced when complete); returns the manifest.

    `first`: only the first K questions of the set (n, n_controls, seed) defines, identical to
    those of the whole set (the order is a seeded mix, so they are a random sample of it).
    `progress(done, total)` is called as scenes finish (the CLI draws a bar with it).
    """
    if not 1 <= n <= MAX_QUESTIONS or (n_controls is not None and not 0 <= n_controls <= MAX_QUESTIONS):
        raise ConfigError(f"a MATE set needs n in 1..{MAX_QUESTIONS:,} and n_controls in 0..{MAX_QUESTIONS:,}, not {n} and {n_controls}")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"the seed must be in 0..2**32-1, not {seed}")
    n_controls = n // 5 if n_controls is None else n_controls
    check_workers(workers)
    out = check_out_dir(out)
    check_replaceable(out, MATE_KIND, legacy=_legacy_set)
    partial = out.with_name(out.name + ".partial")
    remove_partial(partial, MATE_KIND)
    write_marker(partial, MATE_KIND)
    (partial / "scenes").mkdir(parents=True)
    (partial / "truth").mkdir()
    items = plan(n, n_controls, seed)
    if first is not None:
        if first < 1:
            raise ConfigError(f"first must be at least 1, not {first}")
        items = items[:first]
    jobs = [(i, split, config, seed, str(partial)) for i, (split, config) in enumerate(items)]
    rows: list[dict[str, Any]] = []
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for row in pool.imap(_make, jobs, chunksize=16):
                rows.append(row)
                if progress:
                    progress(len(rows), len(jobs))
    else:
        for job in jobs:
            rows.append(_make(job))
            if progress:
                progress(len(rows), len(jobs))
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    (partial / QUESTIONS).write_text(text)
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r["task"], Counter())[str(r["n_objects"])] += 1
    manifest = {
        "format": FORMAT,
        "seed": seed,
        "n": n,
        "n_controls": n_controls,
        "first": first,
        "questions": len(rows),
        "counts": {task: dict(sorted(c.items(), key=lambda kv: int(kv[0]))) for task, c in sorted(counts.items())},
        "camera": CAMERA.to_dict(),
        "questions_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    swap_into_place(partial, out, MATE_KIND, legacy=_legacy_set)
    return manifest


class MateSet:
    """A built MATE folder: its manifest, its questions and the two modalities of each scene."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise DatasetError(f"{self.root} is not a MATE set (no {MANIFEST}); make one with `retlink mate build`")
        try:
            self.manifest = json.loads(path.read_text())
        except ValueError as e:
            raise DatasetError(f"{path}: malformed JSON ({e})") from None
        if self.manifest.get("format") != FORMAT:
            raise DatasetError(f"{path}: format {self.manifest.get('format')!r}, expected {FORMAT!r}")

    @property
    def camera(self) -> dict[str, Any]:
        """The benchmark's fixed camera (a calibration, the same for every scene)."""
        return self.manifest["camera"]

    def questions(self, split: str | None = None) -> Iterator[Question]:
        """Questions in file order, optionally of one split ("cross" or "control")."""
        path = self.root / QUESTIONS
        if not path.is_file():
            raise DatasetError(f"{path}: file not found")
        with path.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    q = Question(**json.loads(line))
                except (ValueError, TypeError) as e:
                    raise DatasetError(f"{path}:{line_no}: invalid question ({e})") from None
                if split is None or q.split == split:
                    yield q

    def image_path(self, q: Question) -> Path:
        return self.root / "scenes" / f"{q.scene}.png"

    def text(self, q: Question) -> str:
        """The textual modality of the question's scene as the set stores it (JSON; the harness
        rewrites it in a prompt's `text_format`, `retlink.mate.scene_text.convert`)."""
        return (self.root / "scenes" / f"{q.scene}.json").read_text().strip()

    def has_truth(self, q: Question) -> bool:
        """Whether the set keeps the renderer's ground truth of `q`'s scene (a blind copy does not)."""
        return (self.root / "truth" / f"{q.scene}.json").is_file()

    def truth(self, q: Question) -> Scene:
        """The renderer's ground truth (tests and analysis only)."""
        return Scene.from_ground_truth(json.loads((self.root / "truth" / f"{q.scene}.json").read_text()))
