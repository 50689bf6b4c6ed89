"""Run an eval config: attacked images once, every pipeline on every condition, one record each.

    runner = Runner(load_eval_config("src/retlink/eval/configs/benchmarks/demo.yaml"))
    runner.run(limit=4)           # resumable: run it again and only missing records are made

Order of work is condition-major (clean first, then each attack): the attacked images of one
attack are made in fixed chunks (see `retlink.attacks.attacked`), then every (sample, setting, pipeline) link of
that attack runs with at most `concurrency` links in flight. Each finished link is appended to
`results.jsonl` at once (durable, see `runs.py`); a link that raises is recorded with its error
and counted as a miss, never fatal. On start the run folder's records are read and every key
already recorded as ok is skipped, so a crash or Ctrl-C loses at most the links in flight.

An `attack: adaptive` is made per pipeline from its own defences (`variants.attack_variants`):
each variant's images are stored like any attack's, the pipeline links every variant it faces,
and its record keeps the per-sample worst case (`worst_case`) and names the variant. A pipeline
may define its own gold answer from the clean image (`gold`, the tagger's undefended label).

Where the work happens is the executor's business (`executor:` in the config): `LocalExecutor`
here (a thread pool in this process, the default) or `retlink.eval.ray_executor.RayExecutor` (Ray
tasks and actors). Both run the same per-item work, `Runner.make_images_chunk` and
`Runner.link_one`, and hand the records back to `run`, the only writer of results.jsonl.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from retlink.attacks.attacked import AttackedStore, LabelMaker, clean_tensor, make_chunk
from retlink.eval.config import EvalConfig, SettingSpec
from retlink.eval.metrics import gold_rank
from retlink.eval.runs import CLEAN, Recorder, by_attack, done_keys, resume_meta, write_meta
from retlink.eval.variants import Variant, attack_variants
from retlink.eval.work import Executor, ImageChunk, Job

log = logging.getLogger(__name__)

#: candidates kept per record (enough for Hits@k with the configured ks and MRR)
KEEP_CANDIDATES = 20


@dataclass
class Plan:
    """What a run will do: every job and how many are already recorded."""

    samples: list[Any]
    conditions: list[tuple[str, str]]  # (setting, attack)
    jobs: list[Job]
    done: set[str] = field(default_factory=set)
    images_missing: dict[str, int] = field(default_factory=dict)

    @property
    def todo(self) -> list[Job]:
        return [j for j in self.jobs if j.key not in self.done]


class LocalExecutor:
    """This process: images one chunk after another, links in a pool of `concurrency` threads."""

    images_first = False

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.pool = ThreadPoolExecutor(runner.config.concurrency, thread_name_prefix="eval")

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def make_images(self, chunks: list[ImageChunk]) -> None:
        for c in chunks:
            self.runner.make_images_chunk(c)

    def link(self, jobs: list[Job]) -> Iterator[dict[str, Any]]:
        """Records of `jobs` as they finish, never more than 2 x concurrency submitted at once."""
        for name in dict.fromkeys(j.pipeline for j in jobs):
            self.runner.pipeline(name)  # build in this thread, not racing in the pool
        pending: set[Future] = set()
        it = iter(jobs)
        limit = 2 * self.runner.config.concurrency
        while True:
            for job in it:
                pending.add(self.pool.submit(self.runner.link_one, job))
                if len(pending) >= limit:
                    break
            if not pending:
                return
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                yield f.result()


def make_executor(runner: Runner) -> Executor:
    """The executor the runner's config asks for (Ray imported only when it is asked for)."""
    if runner.config.executor.kind == "ray":
        from retlink.eval.ray_executor import RayExecutor

        return RayExecutor(runner)
    return LocalExecutor(runner)


class RateColumn(ProgressColumn):
    """Links per second (rich only ships a bytes-per-second column)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} links/s" if speed else "-- links/s", style="progress.data.speed")


def text_seed(seed: int, sample_id: str, setting: str) -> int:
    """Seed of a sample's text perturbation: stable across runs and processes."""
    return zlib.crc32(f"{seed}|{sample_id}|{setting}".encode())


def link_inputs(
    sample: Any, setting: SettingSpec, image: Any, seed: int, notes: dict[str, Any] | None = None
) -> tuple[Any, str, str]:
    """(image, mention, context) as the linker sees them in a setting. An LLM-instructed
    perturbation (`llm_perturb`) says into `notes` (when given) how its text was made: the LLM's
    rewrite or the fallback, and why."""
    from retlink.attacks import text as perturb_text
    from retlink.attacks.multimodal import LinkInput
    from retlink.eval.settings import apply_setting

    seen = apply_setting(LinkInput(image, sample.mention, sample.context), setting.setting)
    context = seen.context
    if setting.text is not None and context:
        text_seed_ = text_seed(seed, sample.id, setting.name)
        if setting.text.kind == "paraphrase":
            from retlink.attacks.paraphrase import paraphrase

            return seen.image, seen.mention, paraphrase(context, seed=text_seed_, llm=setting.text.llm)
        if setting.text.kind == "llm_perturb":
            from retlink.attacks.prompted import llm_perturb

            spec = setting.text
            done = llm_perturb(
                context, sample.mention, instruction=spec.instruction or "", seed=text_seed_, llm=spec.llm,
                fallback=spec.fallback, max_tokens=spec.max_tokens,
            )
            if notes is not None:
                notes.update(done.note(spec.instruction or ""))
            return seen.image, seen.mention, done.text
        fn = getattr(perturb_text, setting.text.kind)
        kwargs = {} if setting.text.kind == "word_permutation" else {"rate": setting.text.rate}
        context = fn(context, seed=text_seed_, **kwargs)
    return seen.image, seen.mention, context


class Runner:
    """Executes one eval config into its run folder."""

    def __init__(
        self,
        config: EvalConfig,
        out: Path | None = None,
        *,
        pipelines: dict[str, Any] | None = None,
        console: Console | None = None,
    ) -> None:
        self.config = config
        self.dir = config.run_dir(out)
        self._pipelines = dict(pipelines or {})
        self.console = console or Console(stderr=True)
        self._kb = None
        self._variants: dict[str, dict[str, Variant]] = {}
        self._golds: dict[tuple[str, str], str] = {}
        self._labels: dict[tuple[str, Any], LabelMaker] = {}
        #: the executor of the run in progress, or of the last run (None before the first)
        self.executor: Executor | None = None

    # -- inputs -----------------------------------------------------------------------------

    def samples(self, limit: int | None = None) -> list[Any]:
        return self.config.samples(limit)

    def kb(self) -> Any:
        """The run's KB, built from the dataset's entities (or `kb.entities`) when missing/stale."""
        if self._kb is None:
            from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder

            text, image = shared_text_embedder(), shared_image_embedder()
            self._kb = self._ensure_kb(self.config.kb, text, image)
        return self._kb

    def _ensure_kb(self, spec: Any, text: Any, image: Any) -> Any:
        """Open a KB (`KBSpec`), building it from its entities (or the dataset's) when missing/stale."""
        from retlink.tools.kb.build import build_kb, ensure_built
        from retlink.tools.kb.store import MANIFEST, KBStore

        if spec.entities is not None:
            ensure_built(spec.entities, spec.path, text, image, progress=True)
        elif not (spec.path / MANIFEST).exists():
            from retlink.datasets import load_dataset

            ds = load_dataset(self.config.dataset.key, self.config.dataset.root, **self.config.dataset.options)
            build_kb(ds.entities(), spec.path, text, image, progress=True)
        return KBStore(spec.path, text, image)

    def pipeline(self, name: str) -> Any:
        if name not in self._pipelines:
            from retlink.eval.pipelines import build_pipeline

            spec = next(p for p in self.config.pipelines if p.name == name)
            self.ensure_kbs([name])
            self._pipelines[name] = build_pipeline(spec, self.config.kb_path_of(spec))
        return self._pipelines[name]

    def ensure_kbs(self, names: list[str]) -> None:
        """Build the run's KB and the named pipelines' own KBs when missing or stale, before any
        pipeline opens them (the attacks' labels use the run's KB too). A Ray run does this once,
        on the driver, so its actors never race to build one."""
        from retlink.eval.pipelines import pipeline_embedders

        self.kb()
        for spec in self.config.pipelines:
            if spec.name in names and spec.kb is not None:
                # the pipeline's own KB, embedded with its own image embedder
                self._ensure_kb(spec.kb, *pipeline_embedders(spec))

    # -- planning ---------------------------------------------------------------------------

    def plan(self, limit: int | None = None) -> Plan:
        cfg = self.config
        samples = self.samples(limit)
        conditions = [(s.name, a) for s in cfg.settings for a in cfg.attacks_in(s)]
        jobs = []
        for attack in [CLEAN, *(a.name for a in cfg.attacks)]:
            for setting in cfg.settings:
                if attack not in cfg.attacks_in(setting):
                    continue
                for sample in samples:
                    for p in cfg.pipelines_in(setting):
                        jobs.append(Job(sample, p, setting, attack))
        plan = Plan(samples, conditions, jobs, done_keys(self.dir))
        for a in cfg.attacks:
            if any(a.name in cfg.attacks_in(s) for s in cfg.settings):
                plan.images_missing[a.name] = sum(
                    not (self.dir / "attacked" / v.store / f"{_stem(s.id)}.json").exists()
                    for v in self.variants(a.name).values()
                    for s in samples
                )
        return plan

    def variants(self, attack: str) -> dict[str, Variant]:
        """{variant key: Variant} of an attack (one, key "", unless it is adaptive)."""
        if attack not in self._variants:
            self._variants[attack] = attack_variants(self.config, self.config.attack(attack))
        return self._variants[attack]

    def print_plan(self, plan: Plan) -> None:
        cfg = self.config
        table = Table("setting", "conditions", "pipelines", title=f"eval run {cfg.name!r} -> {self.dir}")
        for s in cfg.settings:
            table.add_row(
                s.name + (f" (+{s.text.kind})" if s.text else ""),
                ", ".join(cfg.attacks_in(s)),
                ", ".join(cfg.pipelines_in(s)),
            )
        self.console.print(table)
        self.console.print(
            f"dataset [bold]{cfg.dataset.key}[/] ({cfg.dataset.split or 'all splits'}): {len(plan.samples)} samples; "
            f"pipelines: {', '.join(p.name for p in cfg.pipelines)}; concurrency {cfg.concurrency}"
        )
        for a in cfg.attacks:
            if a.name in plan.images_missing:
                self.console.print(
                    f"  attack [bold]{a.name}[/]: {a.attack} ({a.preset}) on {a.surrogate}/{a.target}, "
                    f"params {a.resolved_params()}; {plan.images_missing[a.name]} images to make"
                )
        self.console.print(
            f"[bold]{len(plan.jobs)}[/] links planned, {len(plan.jobs) - len(plan.todo)} already recorded, "
            f"[bold]{len(plan.todo)}[/] to run"
        )

    # -- running ----------------------------------------------------------------------------

    def _check_run_dir(self, plan: Plan) -> None:
        old = resume_meta(self.dir, self.config.fingerprint())
        ids = list(dict.fromkeys([*old.get("samples", []), *(s.id for s in plan.samples)]))
        write_meta(self.dir, self.config, old, samples=ids, versions=_versions())

    def run(
        self,
        limit: int | None = None,
        *,
        dry_run: bool = False,
        progress: bool = True,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> Plan:
        """Run (or resume) the evaluation; returns the plan. `on_record` sees each record after
        it is durable (live dashboards; tests use it to interrupt a run)."""
        from retlink.core.outdirs import check_out_dir

        check_out_dir(self.dir)  # an --out under a file or on /proc: refused before any work
        # the real run's refusal of a folder that holds another config's run, said by the dry run too
        resume_meta(self.dir, self.config.fingerprint())
        plan = self.plan(limit)
        if dry_run:
            self.print_plan(plan)
            return plan
        todo = plan.todo
        # before the run folder: a Ray run without ray installed, or an unreachable cluster,
        # fails here, leaving nothing
        executor = make_executor(self) if todo else None
        self._check_run_dir(plan)
        if executor is None:
            self.console.print(f"nothing to do: all {len(plan.jobs)} links of {self.dir} are recorded")
            return plan
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with (
            Progress(*columns, console=self.console, disable=not progress) as bar,
            Recorder(self.dir, on_record) as records,
            executor,
        ):
            self.executor = executor
            task = bar.add_task("linking", total=len(todo), failed=0)
            groups = by_attack(todo)
            if executor.images_first:  # every attack's images before the first link
                bar.update(task, description="attacking")
                executor.make_images([c for attack, jobs in groups for c in self._chunks_of(attack, jobs, plan)])
            for attack, jobs in groups:
                if not executor.images_first:
                    bar.update(task, description=f"attacking ({attack})")
                    executor.make_images(self._chunks_of(attack, jobs, plan))
                bar.update(task, description=f"linking ({attack})")
                for rec in executor.link(jobs):
                    records.add(rec)
                    bar.update(task, advance=1, failed=records.failed)
        self.console.print(records.summary("links"))
        return plan

    def _chunks_of(self, attack: str, jobs: list[Job], plan: Plan) -> list[ImageChunk]:
        if attack == CLEAN:
            return []
        return self.image_chunks(attack, plan.samples, {j.sample.id for j in jobs})

    def image_chunks(self, attack: str, samples: list[Any], needed: set[str]) -> list[ImageChunk]:
        """The chunks of `attack`'s images holding a needed sample whose image is not stored yet
        (chunks are fixed slices of the run's samples: their seeds do not depend on what is made)."""
        out = []
        for key, (spec, _, folder) in self.variants(attack).items():
            store = AttackedStore(self.dir, folder)
            size = spec.batch_size
            for chunk, start in enumerate(range(0, len(samples), size)):
                part = samples[start : start + size]
                if any(s.id in needed and not store.has(s.id) for s in part):
                    out.append(ImageChunk(attack, key, chunk, part))
        return out

    def make_images_chunk(self, c: ImageChunk) -> int:
        """Attack one chunk and store its images (the per-item work of every executor)."""
        from retlink.attacks.attacked import surrogate

        cfg = self.config
        spec, _, folder = self.variants(c.attack)[c.variant]
        index = [a.name for a in cfg.attacks].index(spec.name)
        # one label maker per surrogate (a worker may make the chunks of several attacks)
        key = (spec.surrogate, spec.pretrained)
        if key not in self._labels:
            self._labels[key] = LabelMaker(self.kb(), surrogate(spec.surrogate, spec.pretrained), cfg.image_size)
        store = AttackedStore(self.dir, folder)
        made = make_chunk(spec, index, c.chunk, c.samples, store, self._labels[key], seed=cfg.seed, size=cfg.image_size)
        log.info("%s: chunk %d, %d images made", folder, c.chunk, made)
        return made

    def _images(self, job: Job) -> list[tuple[str, Any, dict[str, Any]]]:
        """[(variant key, image, meta)] the job's pipeline faces: the clean image, one attacked
        image, or one per adaptive variant of its defences."""
        if job.attack == CLEAN:
            return [("", clean_tensor(job.sample.image_path, self.config.image_size), {})]
        out = []
        for key, (_, pipes, folder) in self.variants(job.attack).items():
            if job.pipeline not in pipes:
                continue
            store = AttackedStore(self.dir, folder)
            if not store.has(job.sample.id):
                from retlink.core.errors import InvalidImageError

                raise InvalidImageError("no attacked image (the clean image could not be read)")
            out.append((key, *store.load(job.sample.id)))
        return out

    def _gold(self, job: Job, pipeline: Any) -> str:
        """The sample's gold answer for this pipeline: its own label on the clean image for a
        pipeline that defines one (the tagger), else the dataset's gold entity."""
        if not hasattr(pipeline, "gold"):
            return job.sample.gold_id
        key = (job.pipeline, job.sample.id)
        if key not in self._golds:
            self._golds[key] = pipeline.gold(clean_tensor(job.sample.image_path, self.config.image_size))
        return self._golds[key]

    @staticmethod
    def _base_record(job: Job) -> dict[str, Any]:
        return {
            "key": job.key,
            "sample_id": job.sample.id,
            "pipeline": job.pipeline,
            "setting": job.setting.name,
            "attack": job.attack,
            "gold": job.sample.gold_id,
        }

    def error_record(self, job: Job, error: str, seconds: float = 0.0, gold: str | None = None) -> dict[str, Any]:
        """The record of a link that failed: counted as a miss, run again by the next resume."""
        rec = self._base_record(job)
        if gold is not None:
            rec["gold"] = gold
        return {
            **rec,
            "status": "error",
            "error": error,
            "pred": None,
            "correct": False,
            "rank": None,
            "seconds": round(seconds, 4),
        }

    def link_one(self, job: Job) -> dict[str, Any]:
        """The record of one link (the per-item work of every executor); never raises for a
        failing sample: the error is recorded."""
        sample = job.sample
        rec = self._base_record(job)
        started = time.perf_counter()
        try:
            pipeline = self.pipeline(job.pipeline)
            gold = rec["gold"] = self._gold(job, pipeline)
            outcomes = []
            notes: dict[str, Any] = {}
            for key, image, meta in self._images(job):
                seen = sample.model_copy(update={"context": meta["context"]}) if "context" in meta else sample
                img, mention, context = link_inputs(seen, job.setting, image, self.config.seed, notes)
                outcomes.append((key, meta, pipeline.link(img, mention, context)))
        except Exception as e:  # a failing sample is recorded and counted, never fatal
            log.warning("%s failed: %s: %s", job.key, type(e).__name__, e)
            return self.error_record(job, f"{type(e).__name__}: {e}", time.perf_counter() - started, rec["gold"])
        key, meta, result = worst_case(outcomes, gold)
        if notes:  # an LLM-instructed text perturbation: the rewrite or its fallback, and why
            rec["text_perturbation"] = notes
        if meta:
            rec["attack_seconds"] = meta.get("seconds")
            rec["distractor"] = meta.get("distractor")
            rec["norms"] = {k: meta["norms"][k] for k in ("linf_255", "l2")}
            rec["norms_png"] = {k: meta["norms_png"][k] for k in ("linf_255", "l2")}
            for field in ("substitutions", "margin"):  # a text or multimodal attack's edits
                if field in meta:
                    rec[field] = meta[field]
        if len(outcomes) > 1:  # an adaptive attack: which variant broke it, and how each fared
            rec["variant"] = key
            rec["variants"] = {k: r.entity_id == gold for k, _, r in outcomes}
        nodes: dict[str, float] = {}
        for ev in result.trace:
            nodes[ev.node] = round(nodes.get(ev.node, 0.0) + ev.seconds, 4)
        calls = [{"node": ev.node, **c} for ev in result.trace for c in ev.detail.get("llm_calls", [])]
        ranked = next((ev.detail for ev in result.trace if ev.node == "rank"), {})
        if ranked.get("by") == "head":  # the head's confidence, what `decision.skip_llm_above` is compared with
            rec["head_p"] = max(ranked["p"], ranked["p_nil"])
        if ranked.get("skip_llm"):
            rec["llm_skipped"] = ranked["skip_llm"]
        detect = next((ev for ev in result.trace if ev.node == "detect" and ev.detail.get("scores")), None)
        if detect is not None:  # the pipeline runs a detector: its verdict and score
            rec["flagged"] = bool(result.perturbed)
            rec["detector_score"] = max(detect.detail["scores"].values())
        cert = next((ev.detail for ev in result.trace if ev.node == "certify"), None)
        if cert is not None:  # a certified pipeline: its radius and the eps it is certified at
            rec["certified_radius_255"] = cert["radius_255"]
            rec["certified_at"] = cert["certified"]
        return {
            **rec,
            "status": "ok",
            "pred": result.entity_id,
            "correct": result.entity_id == gold,
            "rank": gold_rank(result, gold),
            "score": round(float(result.score), 4),
            "decided_by": result.decided_by,
            "candidates": [c.entity.id for c in result.candidates[:KEEP_CANDIDATES]],
            "seconds": round(time.perf_counter() - started, 4),
            "nodes": nodes,
            "llm_calls": calls,
            "prompt_tokens": sum(c["prompt_tokens"] for c in calls),
            "generated_tokens": sum(c["generated_tokens"] for c in calls),
            "cached_tokens": sum(c.get("cached_tokens", 0) for c in calls),
            **(
                {"features": result.features.model_dump()}
                if self.config.record_features and result.features is not None
                else {}
            ),
        }


def worst_case(outcomes: list[tuple[str, dict[str, Any], Any]], gold: str) -> tuple[str, dict[str, Any], Any]:
    """The outcome an attacker with several attacks keeps for one sample (AutoAttack's per-sample
    worst case): a wrong answer the detector did not flag, else a flagged wrong one, else the
    lowest-ranked gold; ties go to the first listed (plain PGD first)."""

    def badness(o: tuple[str, dict[str, Any], Any]) -> tuple[int, float]:
        result = o[2]
        rank = gold_rank(result, gold)
        level = 2 if result.entity_id == gold else int(bool(result.perturbed))
        return level, -(rank if rank is not None else float("inf"))

    return min(outcomes, key=badness)


def _stem(sample_id: str) -> str:
    from retlink.attacks.attacked import file_stem

    return file_stem(sample_id)


def _versions() -> dict[str, str]:
    import platform

    import torch

    try:
        from importlib.metadata import version

        retlink_version = version("retlink")
    except Exception:  # not installed (running from a checkout)
        retlink_version = "unknown"
    return {"retlink": retlink_version, "torch": torch.__version__, "python": platform.python_version()}


def run_config(
    source: Any,
    *,
    out: Path | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    ray: str | None = None,
) -> tuple[Runner, Plan]:
    """Load a config and run it (the CLI's `eval run`); `ray` not None runs it on Ray (an
    address, or "" for the config's `executor.address`)."""
    from retlink.eval.config import load_eval_config

    cfg = load_eval_config(source)
    if ray is not None:
        cfg = cfg.on_ray(ray or None)
    runner = Runner(cfg, out)
    return runner, runner.run(limit, dry_run=dry_run)
