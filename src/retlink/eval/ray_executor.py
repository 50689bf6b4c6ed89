"""The eval runner's work on a Ray cluster (`executor: {kind: ray}` or `retlink eval run --ray`).

The plan, the resume logic and the records are the runner's (`retlink.eval.runner`); this module
only moves its per-item work elsewhere:

- attacked images: one Ray task per chunk (`Runner.make_images_chunk`), with the chunk's fixed
  seed, so a chunk made on any node is the chunk the local executor makes. Each task writes its
  own images (atomically, JSON last: `AttackedStore`); chunks never overlap. All of a run's
  images are made before the link actors start (`images_first`): an actor holds its resources
  for life, and tasks queued behind actors that fill the cluster would never run.
- links: `actors` Ray actors, each holding one `Runner` whose pipelines it loads once, running
  `Runner.link_one` with up to `concurrency` links at once. The driver keeps 2 x concurrency
  links queued per actor and receives each record as it finishes; it alone appends to
  results.jsonl, so resume, fingerprints and reports are those of a local run.
- an actor that dies (node lost, OOM kill, `ray.kill`) is replaced by a new one and the links it
  had in flight are queued again; only a returned record is ever written, so nothing is lost
  and nothing is counted twice. A link whose actor died `link_retries` + 1 times is recorded as
  an error (a resume runs it again, like any failed link).

Nodes must see the run folder, the KB folder and the dataset at the same paths (one machine,
or a shared filesystem).
Ray is imported here only, so a local run never needs it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from retlink.core.errors import BackendError, ConfigError
from retlink.eval.work import ImageChunk, Job, Worker

log = logging.getLogger(__name__)

#: Ray namespace of the link actors (their names start with ACTOR_PREFIX)
NAMESPACE = "retlink"
ACTOR_PREFIX = "retlink-link-"


def import_ray() -> Any:
    """The ray module, or a ConfigError that says how to get it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the Ray executor (--ray, executor.kind: ray) needs the ray package: pip install 'ray==2.60.0' (a retlink dependency: reinstall retlink)"
        ) from None
    return ray


#: seconds to wait for a Ray cluster's address to accept a connection: ray.init itself retries
#: "Failed to connect to GCS" for minutes on an address where nothing listens
PROBE_TIMEOUT_S = 5.0


def probe_address(address: str | None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Refuse, within `timeout` seconds, a Ray address where nothing listens.

    `address` (or `$RAY_ADDRESS`, which ray.init reads when it is None) is HOST:PORT or
    ray://HOST:PORT; None, `auto` and `local` name no network address and are not probed."""
    target = address or os.environ.get("RAY_ADDRESS")
    if not target or target in ("auto", "local"):
        return
    host, sep, port = target.split("://", 1)[-1].rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"a Ray address is HOST:PORT, ray://HOST:PORT or auto, not {target!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e) or type(e).__name__)
        raise BackendError(f"cannot reach the Ray cluster at {target} (waited up to {timeout:g}s): {reason}") from None


# -- the code that runs on the workers ------------------------------------------------------

#: what a worker process builds its Runner with: the driver's Runner class (Ray pickles it by
#: reference), called as `make(config, run_dir, console=...)`
WorkerFactory = Callable[..., Worker]
#: per worker process: Runners by (config fingerprint, run folder), so the Ray tasks that a worker
#: process runs one after another share the KB, the surrogate and its label maker
_RUNNERS: dict[tuple[str, str], Worker] = {}


def _use_reserved_threads(num_cpus: float) -> None:
    """Torch in this worker on the CPUs Ray reserved for it (at least 1), set here rather than
    left to whatever OMP_NUM_THREADS the worker inherited: a fixed thread count fixes the order
    of torch's float reductions, so a worker's scores are reproducible from run to run (they
    can still differ from a local run on more threads in the last digits)."""
    import torch

    threads = max(1, int(num_cpus))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _worker_runner(make: WorkerFactory, config: Any, run_dir: str, num_cpus: float) -> Worker:
    from rich.console import Console

    _use_reserved_threads(num_cpus)
    key = (config.fingerprint(), run_dir)
    if key not in _RUNNERS:
        _RUNNERS[key] = make(config, Path(run_dir), console=Console(stderr=True, quiet=True))
    return _RUNNERS[key]


def _make_chunk(make: WorkerFactory, config: Any, run_dir: str, chunk: ImageChunk) -> int:
    """Ray task body: one chunk of attacked images, stored in the run folder."""
    return _worker_runner(make, config, run_dir, config.executor.attack_num_cpus).make_images_chunk(chunk)


class LinkWorker:
    """Ray actor body: one Runner and its pipelines, loaded once, linking job after job.

    Ready only once warm: each pipeline links `warmup` (a clean job, its record dropped) first,
    so the first real links do not pay for lazy model set-up and `startup_seconds` is the whole
    cost of a new actor."""

    def __init__(
        self, make: WorkerFactory, config: Any, run_dir: str, pipelines: list[str], warmup: Job | None = None
    ) -> None:
        from dataclasses import replace

        self.runner = _worker_runner(make, config, run_dir, config.executor.num_cpus)
        for name in pipelines:
            self.runner.pipeline(name)
            if warmup is not None:
                self.runner.link_one(replace(warmup, pipeline=name))

    def ready(self) -> bool:
        return True

    def link(self, job: Job) -> dict[str, Any]:
        return self.runner.link_one(job)


# -- the driver -----------------------------------------------------------------------------


class RayExecutor:
    """Runs a Runner's chunks as Ray tasks and its links on Ray actors (see the module doc)."""

    #: all images before the first actor starts: live actors hold their CPUs/GPUs, and image
    #: tasks queued behind them on a full cluster would wait forever
    images_first = True

    def __init__(self, runner: Worker) -> None:
        self.runner = runner
        #: the workers build their Runners with the driver's Runner class
        self._make: WorkerFactory = type(runner)
        self.spec = runner.config.executor
        self.ray = import_ray()
        if not self.ray.is_initialized():  # before the run folder: an unreachable cluster leaves nothing
            probe_address(self.spec.address)
        self._owns_ray = False
        self._remote_chunk: Any = None
        self._actor_class: Any = None
        #: [(actor handle, generation)] per slot; a slot's actor is replaced when it dies
        self.actors: list[tuple[Any, int]] = []
        self._pipelines: list[str] = []
        self._warmup: Job | None = None
        #: actors replaced after dying, and links queued again because of it (for reports, tests)
        self.replaced = 0
        self.requeued = 0
        #: seconds spent starting the actors (loading their pipelines), summed over starts
        self.startup_seconds = 0.0

    def __enter__(self) -> RayExecutor:
        ray = self.ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.spec.address, namespace=NAMESPACE, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise BackendError(f"cannot join the Ray cluster {self.spec.address or '(default)'}: {e}") from None
            self._owns_ray = True
        self._remote_chunk = ray.remote(_make_chunk).options(
            num_cpus=self.spec.attack_num_cpus, num_gpus=self.spec.attack_num_gpus
        )
        self._actor_class = ray.remote(LinkWorker)
        # a built KB before any worker opens it (no two actors building it at once)
        self.runner.ensure_kbs([p.name for p in self.runner.config.pipelines])
        return self

    def __exit__(self, *exc: object) -> None:
        for handle, _ in self.actors:
            self.ray.kill(handle, no_restart=True)
        self.actors = []
        if self._owns_ray:
            self.ray.shutdown()

    # -- attacked images ---------------------------------------------------------------------

    def make_images(self, chunks: list[ImageChunk]) -> None:
        """All chunks as Ray tasks at once (the cluster schedules them); Ray re-runs a task
        whose worker died (its default `max_retries`), and a chunk is deterministic."""
        cfg, run_dir = self.runner.config, str(self.runner.dir.resolve())
        refs = [self._remote_chunk.remote(self._make, cfg, run_dir, c) for c in chunks]
        made = sum(self.ray.get(refs))
        log.info("%d attacked images made by %d Ray tasks", made, len(refs))

    # -- links -------------------------------------------------------------------------------

    def _start(self, slot: int, generation: int) -> Any:
        cfg, run_dir = self.runner.config, str(self.runner.dir.resolve())
        name = f"{ACTOR_PREFIX}{slot}-{generation}-{id(self):x}"
        return self._actor_class.options(
            name=name,
            namespace=NAMESPACE,
            num_cpus=self.spec.num_cpus,
            num_gpus=self.spec.num_gpus,
            max_concurrency=self.runner.config.concurrency,
            max_restarts=0,  # the driver replaces a dead actor itself and re-queues its links
        ).remote(self._make, cfg, run_dir, self._pipelines, self._warmup)

    def _ensure_actors(self, pipelines: list[str]) -> None:
        """Start the actors (or restart them for another set of pipelines) and wait until each
        has loaded its pipelines: an actor that cannot is a clear error, not a retry loop."""
        if self.actors and set(pipelines) <= set(self._pipelines):
            return
        for handle, _ in self.actors:
            self.ray.kill(handle, no_restart=True)
        self._pipelines = sorted(set(self._pipelines) | set(pipelines))
        have = self.ray.cluster_resources()
        for res, each in (("CPU", self.spec.num_cpus), ("GPU", self.spec.num_gpus)):
            if each * self.spec.actors > have.get(res, 0):
                log.warning(
                    "%d actors x %s %s need more than the cluster's %s: some start only when it grows",
                    self.spec.actors, each, res, have.get(res, 0),
                )  # fmt: skip
        started = time.perf_counter()
        self.actors = [(self._start(i, 0), 0) for i in range(self.spec.actors)]
        try:
            self.ray.get([h.ready.remote() for h, _ in self.actors])
        except self.ray.exceptions.RayError as e:
            raise BackendError(f"a Ray link actor could not load its pipelines: {e}") from None
        self.startup_seconds += time.perf_counter() - started

    def _replace(self, slot: int) -> None:
        handle, generation = self.actors[slot]
        self.ray.kill(handle, no_restart=True)
        self.actors[slot] = (self._start(slot, generation + 1), generation + 1)
        self.replaced += 1

    def link(self, jobs: list[Job]) -> Iterator[dict[str, Any]]:
        """Records of `jobs` as the actors finish them; at most 2 x concurrency links queued per
        actor, so a dying actor takes few links with it and a slow one holds few back."""
        from dataclasses import replace

        from retlink.eval.runs import CLEAN

        ray = self.ray
        if self._warmup is None and jobs:
            self._warmup = replace(jobs[0], attack=CLEAN)
        self._ensure_actors(list(dict.fromkeys(j.pipeline for j in jobs)))
        queue: deque[tuple[Job, int]] = deque((j, 0) for j in jobs)
        #: in flight: ref -> (slot, actor generation, job, deaths so far)
        flight: dict[Any, tuple[int, int, Job, int]] = {}
        per_actor = 2 * self.runner.config.concurrency
        load = [0] * len(self.actors)
        while queue or flight:
            for slot, (handle, generation) in enumerate(self.actors):
                while queue and load[slot] < per_actor:
                    job, deaths = queue.popleft()
                    flight[handle.link.remote(job)] = (slot, generation, job, deaths)
                    load[slot] += 1
            done, _ = ray.wait(list(flight), num_returns=1)
            for ref in done:
                slot, generation, job, deaths = flight.pop(ref)
                load[slot] -= 1
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    if self.actors[slot][1] == generation:  # first of its links to report the death
                        log.warning("Ray link actor %d died (%s); starting a new one", slot, type(e).__name__)
                        self._replace(slot)
                    if deaths < self.spec.link_retries:
                        queue.appendleft((job, deaths + 1))
                        self.requeued += 1
                        continue
                    record = self.runner.error_record(job, f"the Ray actor linking it died {deaths + 1} times: {e}")
                yield record
