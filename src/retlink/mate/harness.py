"""`retlink mate run CONFIG`: MATE questions through any OpenAI-compatible VLM (or the binding
agent), one durable record per (question, model, prompt), resumable like `retlink eval run`.

    name: qwen-vl
    data: {path: ../mate-data}             # a `retlink mate build` folder, relative to this file
    build: {n: 5500, seed: 0}              # made there first when it is missing
    models:
      - {name: qwen2.5-vl-7b, kind: openai, model: Qwen/Qwen2.5-VL-7B-Instruct, base_url: http://127.0.0.1:8000/v1}
      - {name: binding, kind: binding_agent}
    prompts: [{name: 0shot}, {name: 2shot, shots: 2}, {name: 2shot-cot, shots: 2, cot: true},
              {name: 0shot-xml, text_format: xml}, {name: 0shot-reflect, reflect: true}]
    attacks:                               # optional: every model also answers on attacked scenes
      - {name: square-perception, attack: square, target: perception}
      - {name: pgd-transfer, attack: pgd, target: embedding_away, surrogate: efficientnet_lite0}

Records go to `results.jsonl` through `retlink.eval.runs` (`Recorder`: append + fsync, torn last
line cut on resume), keyed with `record_key(question, model, prompt, attack)` (`clean` first, then each attack, whose
images are made once per scene before its answers, see `retlink.mate.attack`); a run folder holds
`run.json` with the config's fingerprint, so a resumed run refuses to mix two experiments. A
question that fails (server error, bad reply) is recorded as a miss with its error, and retried
when the run is resumed.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from retlink.attacks.spec import COMPOSITE_ATTACKS, AttackSpec
from retlink.core.config import StrictModel, read_yaml, validate_config
from retlink.core.errors import ConfigError, RetlinkError
from retlink.core.schema import OpenAIServerConfig
from retlink.eval.runs import (
    CLEAN,
    Recorder,
    by_attack,
    check_unique_names,
    done_keys,
    fingerprint,
    record_key,
    resume_meta,
    run_dir,
    write_meta,
)
from retlink.mate.analysis import chance, gold_object, unique_by
from retlink.mate.build import MateSet, build
from retlink.mate.prompts import messages, reflection
from retlink.mate.questions import Question, exact_match, extract_answer, out_of_scene
from retlink.mate.scene_text import TextFormat, convert

log = logging.getLogger(__name__)

#: the prompt name the binding agent's records carry (it takes no prompt)
AGENT_PROMPT = "tools"


class DataSpec(StrictModel):
    path: Path


class BuildSpec(StrictModel):
    n: int = Field(5500, ge=1)
    n_controls: int | None = Field(None, ge=0)
    seed: int = 0
    #: only the first K questions of that set (`retlink mate build --first K`)
    first: int | None = Field(None, ge=1)


class ModelSpec(OpenAIServerConfig):
    """A model to evaluate: a served VLM (`openai`) or the binding agent (`binding_agent`)."""

    name: str = Field(min_length=1)
    kind: Literal["openai", "binding_agent"] = "openai"
    #: openai: the served model name
    model: str | None = None
    temperature: float = 0.0

    @model_validator(mode="after")
    def _served_needs_a_server(self) -> ModelSpec:
        if self.kind == "openai" and (not self.model or not self.base_url):
            raise ValueError(f"model {self.name!r}: kind openai needs model and base_url")
        return self


class PromptSpec(StrictModel):
    name: str = Field(min_length=1)
    shots: int = Field(0, ge=0, le=2)
    cot: bool = False
    #: how the scene text is written (the paper's format ablation): json, yaml, xml or sentences;
    #: the binding agent reads the scene in every format its config's prompts name
    text_format: TextFormat = "json"
    #: self-reflection: a second turn shows the model its reply and asks it to check the link and
    #: answer again; the second reply is scored (the first is kept in the record)
    reflect: bool = False
    #: reply budget; None: 48 tokens, 500 with chain of thought (the paper's CoT budget)
    max_tokens: int | None = Field(None, ge=1)

    @property
    def tokens(self) -> int:
        return self.max_tokens or (500 if self.cot else 48)


#: attacks that query a target's loss only (no gradient): what the perception target allows
SCORE_BASED = ("square", "gaussian_noise")


class MateAttackSpec(AttackSpec):
    """One image attack on the MATE scenes: `retlink.attacks.spec.AttackSpec` (same attacks, presets,
    parameters and surrogates), with MATE's targets. `perception` is the binding agent's own
    scene parser, attacked score-based (it has no gradient); `embedding_away` and `classifier`
    are on the surrogate network (a transfer attack on the agent and on any VLM). MATE has no KB,
    so no `embedding_toward_distractor`, and no composite attacks or `text` (they need the eval
    runner's pipelines and KB, or a sentence)."""

    target: Literal["perception", "embedding_away", "classifier"] = "perception"  # type: ignore[assignment]
    batch_size: int = Field(4, ge=1, le=256)

    @model_validator(mode="after")
    def _mate_attack(self) -> MateAttackSpec:
        if self.name == CLEAN:
            raise ValueError(f"an attack cannot be named {CLEAN!r} (the unattacked condition)")
        if self.attack in COMPOSITE_ATTACKS or self.attack in ("augment", "text"):
            raise ValueError(f"attack {self.attack!r} is not available on MATE; use one image attack of the registry")
        if self.target == "perception" and self.attack not in SCORE_BASED:
            raise ValueError(
                f"target perception has no gradient (thresholds and connected components): attack it with "
                f"{' or '.join(SCORE_BASED)}, or attack a surrogate network (target embedding_away) for {self.attack!r}"
            )
        return self


class MateRunConfig(StrictModel):
    name: str = Field(min_length=1)
    data: DataSpec
    build: BuildSpec | None = None
    splits: list[Literal["cross", "control"]] = Field(default_factory=lambda: ["cross", "control"])
    #: first N questions (of the chosen splits, in the set's mixed order)
    limit: int | None = Field(None, ge=1)
    models: list[ModelSpec] = Field(min_length=1)
    prompts: list[PromptSpec] = Field(default_factory=lambda: [PromptSpec(name="0shot")])
    #: image attacks; every model answers every question clean and under each attack
    attacks: list[MateAttackSpec] = Field(default_factory=list)
    #: seeds the attacks (each chunk's seed derives from it, as in `retlink eval run`)
    seed: int = 0
    concurrency: int = Field(4, ge=1)
    bootstrap_resamples: int = Field(1000, ge=10)
    confidence: float = Field(0.95, gt=0, lt=1)
    output_dir: Path = Path("runs")

    @model_validator(mode="after")
    def _unique_names(self) -> MateRunConfig:
        check_unique_names(
            {
                "models": [m.name for m in self.models],
                "prompts": [p.name for p in self.prompts],
                "attacks": [a.name for a in self.attacks],
            }
        )
        return self

    def fingerprint(self) -> str:
        """Hash of what changes results (not the output folder, concurrency or limit)."""
        data = self.model_dump(mode="json", exclude={"output_dir", "concurrency", "limit"})
        for m in data["models"]:  # connection details do not change answers
            for k in ("base_url", "api_key", "timeout_s", "max_retries", "max_concurrency"):
                m.pop(k, None)
        for p in data["prompts"]:  # options at their defaults: runs made before they existed resume
            for k, default in (("text_format", "json"), ("reflect", False)):
                if p.get(k) == default:
                    p.pop(k)
        return fingerprint(data)

    def agent_prompts(self) -> list[PromptSpec]:
        """The binding agent's 'prompts': it takes no wording, only the scene text, so one per
        text format the prompts name (`tools` for JSON, `tools-yaml` and the like for the rest)."""
        formats = dict.fromkeys(p.text_format for p in self.prompts)
        return [PromptSpec(name=AGENT_PROMPT if f == "json" else f"{AGENT_PROMPT}-{f}", text_format=f) for f in formats]

    def run_dir(self, out: Path | None = None) -> Path:
        return run_dir(self.output_dir, self.name, out)


def load_mate_config(source: str | Path | dict[str, Any] | MateRunConfig) -> MateRunConfig:
    """Validated run config; `data.path` in a YAML file is relative to the file."""
    if isinstance(source, MateRunConfig):
        return source
    if isinstance(source, dict):
        return validate_config(MateRunConfig, source, "dict")
    path = Path(source)
    return validate_config(MateRunConfig, read_yaml(path), str(path))


def image_uri(path: Path) -> str:
    """The scene PNG as a data URI, bytes unchanged (JPEG would smear the colours being asked about)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


class Answerer:
    """One model's way to answer a question: `answer(q, prompt) -> (reply text, extra fields)`."""

    def __init__(self, spec: ModelSpec, data: MateSet) -> None:
        self.spec = spec
        self.data = data
        if spec.kind == "openai":
            from retlink.tools.llm.openai_client import OpenAICompatClient

            self.client = OpenAICompatClient.from_config(spec)  # a ModelSpec is an OpenAIServerConfig
            self.client.check()
        else:
            from retlink.mate.agent.graph import BindingAgent

            self.agent = BindingAgent(data.camera)

    def answer(self, q: Question, prompt: PromptSpec, image: Path | None = None) -> tuple[str, dict[str, Any]]:
        """Reply to `q` seeing `image` (an attacked scene) or, when None, the clean scene."""
        image = image or self.data.image_path(q)
        text = convert(self.data.text(q), prompt.text_format)
        if self.spec.kind == "binding_agent":
            result = self.agent.answer(image, text, q.question, prompt.text_format)
            return json.dumps({"answer": result["answer"]}), {"trace": result["trace"]}
        uri = image_uri(image)
        msgs = messages(q, text, uri, shots=prompt.shots, cot=prompt.cot, text_format=prompt.text_format)
        reply, extra = self._chat(msgs, prompt)
        if prompt.reflect:
            msgs = [*msgs, {"role": "assistant", "content": reply}, {"role": "user", "content": reflection(q, prompt.text_format)}]
            first = {"first_reply": reply, "first_reasoning": extra["reasoning"]}
            reply, extra = self._chat(msgs, prompt)
            extra.update(first)
        return reply, extra

    def _chat(self, msgs: list[dict], prompt: PromptSpec) -> tuple[str, dict[str, Any]]:
        from retlink.tools.llm.openai_client import message_reasoning

        response = self.client.chat(msgs, max_tokens=prompt.tokens, temperature=self.spec.temperature)
        message = response.choices[0].message
        return message.content or "", {"reasoning": message_reasoning(message)}


class MateRunner:
    """Runs (or resumes) one MATE run config into its run folder."""

    def __init__(self, config: MateRunConfig, out: Path | None = None, *, console: Console | None = None) -> None:
        self.config = config
        self.dir = config.run_dir(out)
        self.console = console or Console(stderr=True)

    def dataset(self) -> MateSet:
        root = self.config.data.path
        if not (root / "manifest.json").exists() and self.config.build is not None:
            b = self.config.build
            self.console.print(f"building the MATE set in {root} (n={b.n}, seed={b.seed}, first={b.first})")
            build(root, b.n, n_controls=b.n_controls, seed=b.seed, first=b.first)
        return MateSet(root)

    def questions(self, data: MateSet) -> list[Question]:
        """Every question of the chosen splits, in the set's order (before any limit)."""
        return [q for q in data.questions() if q.split in self.config.splits]

    def jobs(self, data: MateSet, limit: int | None = None) -> list[Job]:
        cap = min(x for x in (self.config.limit, limit, 10**12) if x is not None)
        questions = self.questions(data)[:cap]
        out = []
        for attack in [CLEAN, *(a.name for a in self.config.attacks)]:
            for m in self.config.models:
                prompts = self.config.prompts if m.kind == "openai" else self.config.agent_prompts()
                out += [Job(q, m, p, attack) for p in prompts for q in questions]
        return out

    def _write_meta(self, data: MateSet) -> None:
        old = resume_meta(self.dir, self.config.fingerprint())
        if old and old.get("questions_sha256") != data.manifest.get("questions_sha256"):
            raise ConfigError(f"{self.dir} was run on another MATE set than {data.root}")
        manifest = {k: v for k, v in data.manifest.items() if k != "counts"}
        write_meta(self.dir, self.config, old, data=str(data.root),
                       questions_sha256=data.manifest.get("questions_sha256"), manifest=manifest)

    def run(
        self, limit: int | None = None, *, progress: bool = True, on_record: Callable[[dict], None] | None = None
    ) -> dict[str, int]:
        """Answer every question not yet recorded as ok (clean first, then each attack, its
        images made before its answers); returns counts of what was done."""
        data = self.dataset()
        jobs = self.jobs(data, limit)
        self._write_meta(data)
        done = done_keys(self.dir)
        todo = [j for j in jobs if j.key not in done]
        if not todo:
            self.console.print(f"nothing to do: all {len(jobs)} answers of {self.dir} are recorded")
            return {"planned": len(jobs), "ran": 0, "failed": 0, "images": 0}
        answerers = {m.name: Answerer(m, data) for m in {j.model.name: j.model for j in todo}.values()}
        images = 0
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("[red]{task.fields[failed]} failed"), TimeRemainingColumn())
        with (
            Progress(*columns, console=self.console, disable=not progress) as bar,
            Recorder(self.dir, on_record) as records,
            ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="mate") as pool,
        ):
            task = bar.add_task("MATE", total=len(todo), failed=0)
            try:
                for attack, group in by_attack(todo):
                    seen: dict[str, Path] = {}
                    if attack != CLEAN:
                        bar.update(task, description=f"MATE attacking ({attack})")
                        seen, made = self._attacked_images(data, attack, group)
                        images += made
                    bar.update(task, description=f"MATE answering ({attack})")
                    futures = [pool.submit(self._one, answerers[j.model.name], j, seen.get(j.question.scene), data) for j in group]
                    for fut in as_completed(futures):
                        records.add(fut.result())
                        bar.update(task, advance=1, failed=records.failed)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        self.console.print(records.summary("answers"))
        return {"planned": len(jobs), "ran": len(todo), "failed": records.failed, "images": images}

    def _attacked_images(self, data: MateSet, attack: str, group: list[Job]) -> tuple[dict[str, Path], int]:
        """({scene: attacked PNG}, images made now) for the scenes of `group`: made in the fixed
        chunks of the whole set's scenes (so `limit` does not change an image), only where missing."""
        from retlink.attacks.attacked import AttackedStore
        from retlink.mate.attack import attacked_png, make_images, scene_samples
        from retlink.mate.scene import Camera

        index, spec = next((i, a) for i, a in enumerate(self.config.attacks) if a.name == attack)
        needed = {j.question.scene for j in group}
        scenes = scene_samples(data, self.questions(data))
        made = make_images(self.dir, spec, index, scenes, needed, Camera.from_dict(data.camera), seed=self.config.seed)
        store = AttackedStore(self.dir, spec.name)
        return {s: attacked_png(store, s) for s in needed if store.has(s)}, made

    @staticmethod
    def _one(answerer: Answerer, job: Job, image: Path | None, data: MateSet) -> dict[str, Any]:
        q, m, p = job.question, job.model, job.prompt
        rec: dict[str, Any] = {
            "key": job.key,
            "question_id": q.id,
            "model": m.name,
            "prompt": p.name,
            "attack": job.attack,
            "split": q.split,
            "task": q.task,
            "n_objects": q.n_objects,
            "pointer": q.pointer["attribute"],
            "target": q.target["attribute"],
            "linking": q.linking,
            "text_format": p.text_format,
            "answer": q.answer,
            **analysis_fields(q, data),
        }
        start = time.perf_counter()
        try:
            if job.attack != CLEAN:
                if image is None:
                    raise RetlinkError(f"no attacked image of scene {q.scene} (the clean PNG could not be read)")
                rec.update(_attack_meta(image))
            raw, extra = answerer.answer(q, p, image)
        except RetlinkError as e:
            rec.update(status="error", error=str(e), correct=False, out_of_scene=False, prediction=None, raw="")
        except Exception as e:  # a bad question must not end the run: recorded, counted as a miss
            log.exception("question %s with %s failed", q.id, m.name)
            rec.update(status="error", error=f"{type(e).__name__}: {e}", correct=False, out_of_scene=False, prediction=None, raw="")
        else:
            prediction, found = extract_answer(raw)
            rec.update(
                status="ok",
                raw=raw,
                json=found,
                prediction=prediction,
                correct=exact_match(prediction, q.answer),
                out_of_scene=out_of_scene(prediction, q.scene_values),
                **extra,
            )
        rec["seconds"] = round(time.perf_counter() - start, 4)
        return rec


def analysis_fields(q: Question, data: MateSet) -> dict[str, Any]:
    """What the report's analyses need of a question (`retlink.mate.analysis`): its chance of a
    uniform guess, and, where the set keeps its ground truth, the attribute combinations that
    single its object out (absent when `truth/` is not there)."""
    out: dict[str, Any] = {"chance": round(chance(q), 6)}
    if data.has_truth(q):
        scene = data.truth(q)
        gold = gold_object(q, scene)
        if gold is not None:
            out["unique_by"] = unique_by(gold, scene)
    return out


@dataclass(frozen=True)
class Job:
    """One answer to get: a question, by a model with a prompt, on the clean or an attacked scene."""

    question: Question
    model: ModelSpec
    prompt: PromptSpec
    attack: str

    @property
    def key(self) -> str:
        return record_key(self.question.id, self.model.name, self.prompt.name, self.attack)


def _attack_meta(png: Path) -> dict[str, Any]:
    """What a record keeps of its attacked image: the measured norms (exact and as the 8-bit PNG
    the model read) and the seconds the attack took a scene."""
    meta = json.loads(png.with_suffix(".json").read_text())
    return {
        "attack_seconds": meta.get("seconds"),
        "norms": {k: meta["norms"][k] for k in ("linf_255", "l2")},
        "norms_png": {k: meta["norms_png"][k] for k in ("linf_255", "l2")},
    }
