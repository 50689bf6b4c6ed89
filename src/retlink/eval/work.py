"""The eval runner's units of work and the two interfaces between the runner and its executors.

`Job` (one link) and `ImageChunk` (one chunk of attacked images) are what an executor runs;
`Worker` is what it runs them with (the `Runner`: `link_one`, `make_images_chunk`, ...), and
`Executor` is what the runner hands them to (`LocalExecutor` in `runner.py`, `RayExecutor` in
`ray_executor.py`). Both sides import this module and not each other: the Ray executor builds
its workers' Runners from the class it is given, so it never imports the runner.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from retlink.eval.config import SettingSpec
from retlink.eval.runs import record_key


@dataclass(frozen=True)
class Job:
    """One link to make."""

    sample: Any
    pipeline: str
    setting: SettingSpec
    attack: str

    @property
    def key(self) -> str:
        return record_key(self.sample.id, self.pipeline, self.setting.name, self.attack)


@dataclass(frozen=True)
class ImageChunk:
    """One chunk of attacked images to make: `samples` are the chunk's samples in run order."""

    attack: str
    variant: str
    chunk: int
    samples: list[Any]


class Executor(Protocol):
    """Runs a run's per-item work somewhere; used as a context manager around one `run`."""

    #: make every attack's images before the first link (True: workers that make images and
    #: workers that link compete for the same cluster resources); False: attack by attack,
    #: each attack's images just before its links
    images_first: bool

    def make_images(self, chunks: list[ImageChunk]) -> None:
        """Make (and store in the run folder) the attacked images of every chunk."""

    def link(self, jobs: list[Job]) -> Iterator[dict[str, Any]]:
        """One record per job (`Runner.link_one`), in the order they finish."""

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


class Worker(Protocol):
    """The per-item side of a run that an executor calls (implemented by `Runner`)."""

    config: Any
    #: the run folder
    dir: Path

    def pipeline(self, name: str) -> Any:
        """The named pipeline, built on first use."""

    def ensure_kbs(self, names: list[str]) -> None:
        """Build the run's KB and the named pipelines' own KBs when missing or stale."""

    def make_images_chunk(self, c: ImageChunk) -> int:
        """Attack one chunk and store its images; how many were stored."""

    def link_one(self, job: Job) -> dict[str, Any]:
        """The record of one link (never raises for a failing sample)."""

    def error_record(self, job: Job, error: str, seconds: float = 0.0, gold: str | None = None) -> dict[str, Any]:
        """The record of a link that failed."""
