"""The YAML eval config: what to evaluate, against which attacks, in which settings, and where to.

One file describes one reproducible run (the lm-evaluation-harness idea: the config *is* the
experiment). Every model forbids unknown keys and errors go through the same formatter as the
linker's config, so `attacks[1].params.epss: unknown key` names the bad key instead of silently
running the default. Relative `path`/`entities`/`root` values are relative to the YAML file, and
`$RETLINK_CACHE` and `~` expand in them (`retlink.core.config.read_yaml`, the one path mechanism);
`output_dir` is relative to the working directory (where a user expects `runs/` to appear).

    name: demo
    dataset: {key: demo, split: test}
    kb: {path: ~/.cache/retlink/eval-demo-kb}
    pipelines:
      - {name: baseline, kind: baseline}
      - {name: agent, kind: agent, overrides: {search: {enabled: false}}}
    attacks:
      - {name: pgd-8, attack: pgd, params: {eps: 8/255, steps: 10}, target: embedding_toward_distractor}
    settings: [it2t, i2t]
    executor: {kind: ray, actors: 4, num_cpus: 2}    # optional; default: this process
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from retlink.agent.config import PRESET_DIR, load_config
from retlink.agent.decision import head_file
from retlink.attacks.spec import ATTACK_INTERNALS, AttackSpec
from retlink.attacks.spec import fraction_text as fraction_text  # where the report looks for it
from retlink.core.config import (
    NAME,
    NAMED_PATHS,
    PATH_KEYS,
    StrictModel,
    UserPath,
    config_error,
    init_hints,
    read_yaml,
    resolve_path,
    resolve_paths,
    validate_config,
    validation_lines,
)
from retlink.core.paths import DEFAULT_CACHE, cache_dir
from retlink.core.schema import LLMConfig, SummaryConfig
from retlink.eval.pipeline_base import AGENT_CONFIG_KINDS
from retlink.eval.runs import CLEAN, check_unique_names, fingerprint, run_dir


class DatasetSpec(StrictModel):
    """Which samples: a registered loader (`retlink.datasets`), its folder and split."""

    key: str
    #: dataset folder; None for loaders with a default (the demo)
    root: Path | None = None
    split: str | None = None
    #: evaluate the first N samples only (the CLI's --limit lowers it further)
    limit: int | None = Field(None, ge=1)
    #: extra keyword arguments of the loader, e.g. {strict_images: false}
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("key")
    @classmethod
    def _known(cls, v: str) -> str:
        from retlink.datasets import available

        if v not in available():
            raise ValueError(f"unknown dataset {v!r}; known: {', '.join(available())}")
        return v


class KBSpec(StrictModel):
    """The KB every pipeline ranks; built from the dataset's entities when missing."""

    path: UserPath
    #: an entities JSONL to (re)build from when the KB is missing or stale; None: the dataset's
    #: own entities, built only when the KB is missing
    entities: UserPath | None = None

    @field_validator("path")
    @classmethod
    def _a_folder(cls, v: Path) -> Path:
        """A KB is a folder: a file here would be refused by the build mid-run (after the dry
        run said yes), so it is refused at load."""
        for p in [v, *Path(v).expanduser().parents]:
            if p.exists():
                if not p.is_dir():
                    raise ValueError(f"{p} is a file; a KB path names a folder")
                break
        return v


#: pipeline kinds that cannot link without the image (no text_only setting for them): the image
#: levels, and `certified`, whose answer is decided by the image among the alias candidates
IMAGE_ONLY_KINDS = ("tagger", "retrieval", "certified")


class PipelineSpec(StrictModel):
    """One linker to evaluate: a registered kind (see `retlink.eval.pipelines`) plus its options."""

    name: str = Field(pattern=NAME)
    kind: str
    #: agent: a preset name or YAML path the overrides apply to (None: the embedded default)
    config: str | None = None
    #: agent: nested config keys merged over `config`, e.g. {search: {enabled: false}}
    overrides: dict[str, Any] = Field(default_factory=dict)
    #: baseline: `BaselineConfig` fields (text_weight, image_weight, top_k, pool, image_backend);
    #: certified: `CertifiedConfig` fields (eps, size, max_candidates)
    options: dict[str, Any] = Field(default_factory=dict)
    #: this pipeline's own KB, built with the pipeline's own embedders when missing or stale;
    #: needed when its image embedder is not the default's (the KB stores image vectors).
    #: None: the run's KB
    kb: KBSpec | None = None

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        from retlink.eval.pipelines import PIPELINES

        if v not in PIPELINES:
            raise ValueError(f"unknown pipeline kind {v!r}; known: {', '.join(sorted(PIPELINES))}")
        return v


class TextPerturbation(StrictModel):
    """A perturbation of the context, seeded per sample: random noise (`retlink.attacks.text`),
    an LLM paraphrase (`retlink.attacks.paraphrase`) or an LLM-instructed adversarial rewrite
    (`llm_perturb`, `retlink.attacks.prompted`: the text-centric adversarial prompting families
    named by `instruction`), both by `llm` (the in-process model by default)."""

    kind: Literal["char_noise", "word_dropout", "word_permutation", "paraphrase", "llm_perturb"]
    rate: float = Field(0.1, ge=0, le=1)
    #: paraphrase and llm_perturb: the language model that rewrites (None: the embedded in-process LLM)
    llm: LLMConfig | None = None
    #: llm_perturb only (and required there): the rewrite the LLM is asked for
    instruction: Literal["noise_injection", "information_dropout", "permutation", "reasoning"] | None = None
    #: llm_perturb only: what a refused rewrite (mention lost, empty, unchanged, out of bounds) or a
    #: failed backend becomes: the family's rule-based perturbation with the mention protected
    #: (`rule`), or the sentence unchanged (`original`); the record says which happened and why
    fallback: Literal["rule", "original"] = "rule"
    #: llm_perturb only: the most tokens the LLM may write
    max_tokens: int = Field(48, ge=8, le=512)

    @model_validator(mode="after")
    def _llm_only_for_paraphrase(self) -> TextPerturbation:
        llm_kinds = ("paraphrase", "llm_perturb")
        if self.llm is not None and self.kind not in llm_kinds:
            raise ValueError(f"llm: only a paraphrase or an llm_perturb uses a language model, not {self.kind}")
        if self.kind == "llm_perturb" and self.instruction is None:
            raise ValueError(
                "instruction: llm_perturb needs one of noise_injection, information_dropout, permutation, reasoning"
            )
        if self.kind != "llm_perturb":
            fields = type(self).model_fields
            set_ = [k for k in ("instruction", "fallback", "max_tokens") if getattr(self, k) != fields[k].default]
            if set_:
                raise ValueError(f"{', '.join(set_)}: only for kind: llm_perturb, not {self.kind}")
        return self


class SettingSpec(StrictModel):
    """Which modalities reach the linker (`retlink.eval.settings.Setting`) and what runs in it.

    `i2t` removes the mention and the sentence (the image alone, as the papers define I2T);
    `i2t_mention` keeps the bare mention (on the demo it names several KB entities on purpose, so
    the image must decide); `text_only` removes the image.
    """

    name: str = Field(pattern=NAME)
    setting: Literal["it2t", "i2t", "i2t_mention", "image_only", "text_only"]
    text: TextPerturbation | None = None
    #: attack names run in this setting (None: all of them)
    attacks: list[str] | None = None
    #: pipeline names run in this setting (None: all of them)
    pipelines: list[str] | None = None
    #: also run the unattacked images (the reference for drop)
    clean: bool = True


class MetricsSpec(StrictModel):
    hits_at: list[Annotated[int, Field(ge=1, le=1000)]] = Field(default_factory=lambda: [1, 3, 5], min_length=1)
    bootstrap_resamples: int = Field(1000, ge=10, le=100_000)
    confidence: float = Field(0.95, gt=0, lt=1)


class ExecutorSpec(StrictModel):
    """Where the work of a run happens; never changes its records (not in the fingerprint).

    `local` (the default): this process, `concurrency` links at once in a thread pool. `ray`: a
    Ray cluster (`retlink.eval.ray_executor`): attacked images by Ray tasks, links by `actors`
    Ray actors that each hold the pipelines (loaded once per actor) and run `concurrency` links at
    once; this process stays the only writer of results.jsonl. The run folder, the KB and the
    dataset must be at the same paths on every node (one machine, or a shared filesystem).
    """

    kind: Literal["local", "ray"] = "local"
    #: ray: the cluster to join (`ray://HOST:10001`, `HOST:6379`, `auto`); None: $RAY_ADDRESS,
    #: else a cluster started with `ray start` on this machine, else a new local one
    address: str | None = None
    #: ray: link actors (workers), each with its own copy of the pipelines
    actors: int = Field(1, ge=1, le=4096)
    #: ray: resources of one link actor (torch in it uses num_cpus threads)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    #: ray: resources of one attack task (one chunk of attacked images)
    attack_num_cpus: float = Field(1.0, ge=0)
    attack_num_gpus: float = Field(0.0, ge=0)
    #: ray: times a link is run again after the actor running it died (then it is recorded as an
    #: error, retried by the next resume like any failed link)
    link_retries: int = Field(2, ge=0, le=100)

    @model_validator(mode="after")
    def _ray_keys_need_ray(self) -> ExecutorSpec:
        if self.kind == "local":  # a Ray setting on a local run is a mistake, not a no-op
            fields = type(self).model_fields
            ray_only = sorted(k for k in fields if k != "kind" and getattr(self, k) != fields[k].default)
            if ray_only:
                raise ValueError(f"{', '.join(ray_only)}: only for kind: ray (this executor is local)")
        return self


#: the gradient the purifier-aware attacks take through a `resample` step: 2, its own (torch's
#: antialiased bilinear down- and up-sampling, since 2026-12-07); before, the identity, a weaker
#: attack. A run whose attacks went through a resample under the old code hashes without it, so it
#: is refused on resume instead of mixing images and links of the two attacks
RESAMPLE_GRADIENT = 2


def _through_resample(attack: dict[str, Any]) -> bool:
    """Whether an attack (its config dump) may differentiate through a resample step: `adaptive`
    follows each pipeline's own purifier, the others name their steps in `purify`/`squeezers`."""
    if attack["attack"] == "adaptive":
        return True
    params = attack.get("params") or {}
    steps = [*(params.get("purify") or []), *(params.get("squeezers") or [])]
    return any(isinstance(step, dict) and step.get("kind") == "resample" for step in steps)


class EvalConfig(StrictModel):
    """A whole evaluation run."""

    name: str = Field(pattern=NAME)
    #: numpy and torch take seeds below 2**32 (a larger one fails mid-run, not at load)
    seed: int = Field(0, ge=0, lt=2**32)
    dataset: DatasetSpec
    kb: KBSpec
    pipelines: list[PipelineSpec] = Field(min_length=1)
    attacks: list[AttackSpec] = Field(default_factory=list)
    settings: list[SettingSpec] = Field(default_factory=lambda: [SettingSpec(name="it2t", setting="it2t")])
    metrics: MetricsSpec = MetricsSpec()
    #: the pipeline recovery is measured against (None: the first `baseline` kind, if any)
    reference: str | None = None
    #: links in flight at once
    concurrency: int = Field(2, ge=1, le=64)
    #: images are resized and centre-cropped to this square before attacks and linking
    image_size: int = Field(224, ge=32, le=1024)
    output_dir: Path = Path("runs")
    #: write each agent link's decision features (its candidate pool's feature rows) into its
    #: record: what `retlink train` fits the decision head on
    record_features: bool = False
    #: where links and attacks run (this process, or a Ray cluster); `--ray` sets kind: ray
    executor: ExecutorSpec = ExecutorSpec()

    @field_validator("settings", mode="before")
    @classmethod
    def _setting_shorthand(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": s, "setting": s} if isinstance(s, str) else s for s in v]
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> EvalConfig:
        check_unique_names(
            {
                "pipelines": [p.name for p in self.pipelines],
                "attacks": [a.name for a in self.attacks],
                "settings": [s.name for s in self.settings],
            }
        )
        if CLEAN in {a.name for a in self.attacks}:
            raise ValueError(f"attacks: {CLEAN!r} is reserved for the unattacked images")
        known = {a.name for a in self.attacks}
        for s in self.settings:
            unknown = sorted(set(s.attacks or []) - known)
            if unknown:
                raise ValueError(f"settings.{s.name}.attacks: unknown attack(s) {', '.join(unknown)}")
        pipes = {p.name for p in self.pipelines}
        for s in self.settings:
            unknown = sorted(set(s.pipelines or []) - pipes)
            if unknown:
                raise ValueError(f"settings.{s.name}.pipelines: unknown pipeline(s) {', '.join(unknown)}")
        image_kinds = {p.name: p.kind for p in self.pipelines if p.kind in IMAGE_ONLY_KINDS}
        for s in self.settings:
            if s.setting == "text_only":
                needs = sorted(n for n in self.pipelines_in(s) if n in image_kinds)
                if needs:
                    raise ValueError(
                        f"settings.{s.name}: text_only removes the image, which pipeline(s) {', '.join(needs)} "
                        f"({', '.join(image_kinds[n] for n in needs)}) link from; list the others in `pipelines:`"
                    )
        if self.reference is not None and self.reference not in {p.name for p in self.pipelines}:
            raise ValueError(f"reference: no pipeline named {self.reference!r}")
        return self

    def reference_pipeline(self) -> str | None:
        """The pipeline recovery is measured against."""
        if self.reference:
            return self.reference
        return next((p.name for p in self.pipelines if p.kind == "baseline"), None)

    def attacks_in(self, setting: SettingSpec) -> list[str]:
        """Condition names of one setting, clean first."""
        names = [a.name for a in self.attacks if setting.attacks is None or a.name in setting.attacks]
        return ([CLEAN] if setting.clean else []) + names

    def pipelines_in(self, setting: SettingSpec) -> list[str]:
        """Pipeline names that run in one setting."""
        return [p.name for p in self.pipelines if setting.pipelines is None or p.name in setting.pipelines]

    def attack(self, name: str) -> AttackSpec:
        return next(a for a in self.attacks if a.name == name)

    def samples(self, limit: int | None = None) -> list[Any]:
        """The first samples of the config's split: `limit` of them, capped by its own
        `dataset.limit` (as `retlink eval run --limit` is)."""
        from retlink.datasets import load_dataset

        ds = load_dataset(self.dataset.key, self.dataset.root, **self.dataset.options)
        cap = min(x for x in (self.dataset.limit, limit, 10**12) if x is not None)
        return [s for _, s in zip(range(cap), ds.samples(self.dataset.split), strict=False)]

    def kb_path_of(self, pipeline: PipelineSpec) -> Path:
        """The KB a pipeline opens: its own (`kb:` on the pipeline, embedded with its own
        weights) or the run's."""
        return pipeline.kb.path if pipeline.kb is not None else self.kb.path

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not the output folder, concurrency or executor), so a
        resumed run refuses to mix records of two different experiments."""
        data = self.model_dump(mode="json", exclude={"output_dir", "concurrency", "executor"})
        if not data["record_features"]:  # runs from before the option keep their fingerprint
            data.pop("record_features")
        # how many samples is not what a record is: like `--limit`, a larger `dataset.limit` extends
        # the run (a head refitted on more of a split keeps the links it has); hashed as unset
        data["dataset"]["limit"] = None
        for p in data["pipelines"]:  # a pipeline on the run's KB hashes as before `kb` existed
            if p.get("kb") is None:
                p.pop("kb", None)
            # an agent's `decision.head`, a certified pipeline's `options.head`
            head = ((p.get("overrides") or {}).get("decision") or {}).get("head") or (p.get("options") or {}).get("head")
            if head:  # a retrained head is another experiment, though its path is the same
                p["head_sha256"] = _file_sha256(head_file(head))
            if exact := (p.get("options") or {}).get("exact_head"):  # a certified cascade's other head
                p["exact_head_sha256"] = _file_sha256(head_file(exact))
            overrides = p.get("overrides") or {}
            roles = {  # likewise retrained image weights (`retlink train`, kind: encoder)
                "image_weights_sha256": (overrides.get("embedder") or {}).get("image_weights"),
                "captioner_weights_sha256": (overrides.get("captioner") or {}).get("image_weights"),
                "detector_weights_sha256": ((overrides.get("defence") or {}).get("detector") or {}).get("image_weights"),
            }
            for key, weights in roles.items():
                if weights:
                    p[key] = _file_sha256(Path(weights))
            clip = (overrides.get("embedder") or {}).get("open_clip_pretrained")
            if clip and Path(clip).expanduser().is_file():  # a local open_clip file (a fine-tune too)
                p["open_clip_weights_sha256"] = _file_sha256(Path(clip))
        for a in data["attacks"]:  # likewise an attack without `pretrained`
            if a.get("pretrained") is None:
                a.pop("pretrained", None)
            else:  # a network's fine-tuned checkpoint, an open_clip tower's weights file
                a["pretrained_sha256"] = _file_sha256(Path(a["pretrained"]))
            if a["attack"] == "multimodal":  # now one joint objective, LM candidates: another attack
                a["definition"] = "joint"
            if _through_resample(a):  # the gradient it takes through a resample changed: another attack
                a["resample_gradient"] = RESAMPLE_GRADIENT
        for s in data["settings"]:
            if s.get("text") and s["text"].get("llm") is None:  # as before paraphrases existed
                s["text"].pop("llm", None)
            if s.get("text") and s["text"]["kind"] != "llm_perturb":  # as before llm_perturb existed
                for k in ("instruction", "fallback", "max_tokens"):
                    s["text"].pop(k, None)
        for s in data["settings"]:  # i2t changed meaning (image only, no longer the bare mention):
            if s["setting"] == "i2t":  # a run made before must not resume into a mix of both
                s["definition"] = "image only"
        for p, spec in zip(data["pipelines"], self.pipelines, strict=True):
            if spec.kind in AGENT_CONFIG_KINDS:  # what `config` names resolves to, not its name:
                p["base"] = resolved_base(spec.config)  # a preset (or the default) can change
                decision = (spec.overrides.get("decision") or {}) if isinstance(spec.overrides, dict) else {}
                head = decision["head"] if "head" in decision else p["base"]["decision"]["head"]
                if head in NAMED_PATHS["head"]:  # the shipped head: refitted, it is another agent
                    p["head_sha256"] = _file_sha256(head_file(head))
        return fingerprint(data)

    def on_ray(self, address: str | None = None) -> EvalConfig:
        """This config with `executor.kind: ray` (the CLI's `--ray [ADDRESS]`); `address` replaces
        the configured one when given."""
        executor = self.executor.model_dump(exclude_unset=True) | {"kind": "ray"}
        if address:
            executor["address"] = address
        return self.model_copy(update={"executor": ExecutorSpec.model_validate(executor)})

    def run_dir(self, out: Path | None = None) -> Path:
        """Where this run writes: `out` if given, else `output_dir/name`."""
        return run_dir(self.output_dir, self.name, out)


def resolved_base(config: str | None) -> dict[str, Any]:
    """The agent config a pipeline's `config` (a preset, a YAML path, or None: the default)
    resolves to, every field with its default filled in, with this checkout's and the cache's
    folders written as placeholders so the same run hashes alike on another machine. Hashed into
    the fingerprint: when a preset or a code default changes, a run made before refuses to resume
    rather than mix records of the two agents."""
    data = load_config(config).model_dump(mode="json")
    if data.get("summary") == SummaryConfig().model_dump(mode="json"):  # hashes as before the option existed
        data.pop("summary")
    text = json.dumps(data, sort_keys=True)
    folders = {str(PRESET_DIR.parent.parent): "<retlink>", str(DEFAULT_CACHE): "$RETLINK_CACHE", str(cache_dir()): "$RETLINK_CACHE"}
    folders.setdefault(str(Path.home()), "~")
    for folder in sorted(folders, key=len, reverse=True):  # the longest first: one may hold another
        text = text.replace(folder, folders[folder])
    base = json.loads(text)
    # the packaged weights: hashes as before each role's option existed
    for role in (base.get("embedder") or {}, base.get("captioner") or {}, (base.get("defence") or {}).get("detector") or {}):
        if role.get("image_weights") is None:
            role.pop("image_weights", None)
    return base


def _file_sha256(path: Path) -> str:
    """Content hash of a file the run reads (a decision head); "missing" when it is not there."""
    try:
        return hashlib.sha256(path.expanduser().read_bytes()).hexdigest()
    except OSError:
        return "missing"


def load_eval_config(source: str | Path | dict[str, Any] | EvalConfig) -> EvalConfig:
    """Validated eval config from a YAML path, a dict or a config object; ConfigError otherwise.

    Validated completely: besides the models above, every value handed on to code that only
    runs later (attack parameters, a pipeline's `overrides` and `options`, the dataset loader's
    `options`) is checked here, so `--dry-run` catches it and no run folder is made for it.
    """
    if isinstance(source, EvalConfig):
        return source
    if isinstance(source, dict):
        data, origin = source, "dict"
    else:
        path = Path(source)
        data, origin = read_yaml(path, EVAL_PATH_KEYS), str(path)
        data = _relative_to_file(data, path.parent)
    cfg = validate_config(EvalConfig, data, origin)
    problems = deep_problems(cfg)
    if problems:
        raise config_error(origin, problems)
    return cfg


Problem = tuple[tuple[Any, ...], str]


def deep_problems(cfg: EvalConfig) -> list[Problem]:
    """(key path, message) of each value the models accept but the run would refuse later."""
    from retlink.datasets import DATASETS

    loader = DATASETS[cfg.dataset.key]
    problems = _kwargs_problems([loader], cfg.dataset.options, ("dataset", "options"), skip={"root"})
    for i, attack in enumerate(cfg.attacks):
        problems += _attack_problems(attack, ("attacks", i))
    for i, pipe in enumerate(cfg.pipelines):
        problems += _pipeline_problems(pipe, ("pipelines", i))
    return problems


def _kwargs_problems(classes: list[type], values: dict[str, Any], loc: tuple[Any, ...], skip: set[str]) -> list[Problem]:
    """Unknown keyword arguments of `classes`, and values of the wrong type (strict: '3' is no int)."""
    from pydantic import TypeAdapter, ValidationError

    hints, names = init_hints(classes)
    problems: list[Problem] = []
    for key, value in values.items():
        if key in skip or key not in names:
            problems.append(((*loc, key), "unknown key; known: " + ", ".join(sorted(names - skip))))
            continue
        if key not in hints:
            continue
        adapter = TypeAdapter(hints[key], config=ConfigDict(arbitrary_types_allowed=True, strict=True))
        try:
            adapter.validate_python(value)
        except ValidationError as e:
            problems += validation_lines(e, (*loc, key))
    return problems


def _attack_problems(spec: AttackSpec, loc: tuple[Any, ...]) -> list[Problem]:
    """Parameter types, then a dry build of the attack on a stand-in network with the run's own
    `build_attack`/`build_target` calls, so its own checks (norm names, step counts, purify
    steps, a classifier attack on an embedding target) fail now rather than mid-run."""
    from torch import nn

    from retlink.attacks import ATTACKS, build_attack
    from retlink.attacks.attacked import build_target
    from retlink.core.networks import network

    params = spec.image_params()  # a composite attack's own keys are checked by AttackSpec
    problems = _kwargs_problems([ATTACKS[spec.image_attack]], params, (*loc, "params"), skip=ATTACK_INTERNALS)
    if spec.attack == "multimodal":  # its text half's keys: the text attack's, typed and built
        problems += _text_half_problems(spec, loc)
    problems += _number_problems(spec.resolved_params(), (*loc, "params"))
    if isinstance(params.get("classifier"), str):  # a network by name: loaded by the run only
        try:
            network(params["classifier"])
        except ValueError as e:
            problems.append(((*loc, "params", "classifier"), str(e)))
        params["classifier"] = nn.Identity()
    if problems:
        return problems
    try:
        build_attack(spec.image_attack, build_target(spec.target, nn.Identity()), spec.preset, **params)
    except (TypeError, ValueError) as e:
        problems.append(((*loc, "params"), str(e).splitlines()[0]))
    return problems


def _text_half_problems(spec: AttackSpec, loc: tuple[Any, ...]) -> list[Problem]:
    """A multimodal attack's text parameters, checked as `attack: text` checks its own."""
    from torch import nn

    from retlink.attacks import ATTACKS, build_attack
    from retlink.attacks.attacked import build_target
    from retlink.attacks.spec import TEXT_ATTACK_PARAMS

    text = {k: v for k, v in spec.params.items() if k in TEXT_ATTACK_PARAMS}
    problems = _kwargs_problems([ATTACKS["text"]], text, (*loc, "params"), skip=ATTACK_INTERNALS)
    rounds = spec.params.get("rounds", 2)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        problems.append(((*loc, "params", "rounds"), f"must be a whole number of at least 1, not {rounds!r}"))
    if not problems:
        try:
            build_attack("text", build_target(spec.target, nn.Identity()), "normal", **text)
        except (TypeError, ValueError) as e:
            problems.append(((*loc, "params"), str(e).splitlines()[0]))
    return problems


#: attack parameters that are sizes (a budget, a step): finite and above zero. A NaN budget
#: makes every attacked image NaN and every attacked link fail, which the report would show as
#: an attack that fully succeeded; a negative one is no budget at all
POSITIVE_PARAMS = frozenset({"eps", "alpha", "step_size", "lr", "c", "kappa_max", "sigma", "std"})
#: attack parameters that are counts or seeds: their inclusive range (a huge step count is a run
#: that never ends; numpy and torch take seeds below 2**32)
INT_RANGES = {"steps": (1, 100_000), "restarts": (1, 1_000), "search_steps": (1, 1_000), "seed": (0, 2**32 - 1)}


def _number_problems(params: dict[str, Any], loc: tuple[Any, ...]) -> list[Problem]:
    """Every number of an attack's parameters finite, and the sizes (`POSITIVE_PARAMS`) > 0."""
    import math

    problems: list[Problem] = []
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(((*loc, key), f"must be a finite number, not {value}"))
        elif key in POSITIVE_PARAMS and value <= 0:
            problems.append(((*loc, key), f"must be greater than 0, not {value}"))
        elif key in INT_RANGES and (value > INT_RANGES[key][1] or (key == "seed" and value < 0)):
            # a count below 1 is the attack's own check (its message), run by the dry build
            low, high = INT_RANGES[key]
            problems.append(((*loc, key), f"must be {low} to {high:,}, not {value}"))
    return problems


def _pipeline_problems(spec: PipelineSpec, loc: tuple[Any, ...]) -> list[Problem]:
    """An agent's `config` with its `overrides` merged in must be a valid agent config, and a
    baseline's `options` a valid `BaselineConfig` (a certified one's a `CertifiedConfig`); other
    kinds take neither."""
    from pydantic import ValidationError

    from retlink.agent.config import RetlinkConfig
    from retlink.core.config import deep_merge
    from retlink.core.errors import ConfigError

    if spec.kind in AGENT_CONFIG_KINDS:
        try:
            base = load_config(spec.config).model_dump(mode="json")
        except ConfigError as e:
            return [((*loc, "config"), " ".join(str(e).split()))]
        try:
            RetlinkConfig.model_validate(deep_merge(base, spec.overrides))
        except ValidationError as e:
            return validation_lines(e, (*loc, "overrides"))
        return [((*loc, "options"), f"{spec.kind} pipelines take `overrides`, not `options`")] if spec.options else []
    if spec.kind in ("baseline", "certified"):  # pipelines configured by `options` alone
        from retlink.eval.baseline import BaselineConfig
        from retlink.eval.certified import CertifiedConfig

        options_model = BaselineConfig if spec.kind == "baseline" else CertifiedConfig
        problems: list[Problem] = []
        try:
            options_model.model_validate(spec.options)
        except ValidationError as e:
            problems = validation_lines(e, (*loc, "options"))
        if spec.overrides or spec.config:
            problems.append(((*loc,), f"{spec.kind} pipelines take `options`, not `config` or `overrides`"))
        return problems
    return []


#: keys whose values are paths in an eval config (relative to its file; $RETLINK_CACHE, ~)
EVAL_PATH_KEYS = PATH_KEYS | {"root", "pretrained"}


def relative_to_file(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """An eval config dict with every path resolved as if it were in a file in `base` (an eval
    config written inline in another config file)."""
    return _relative_to_file(resolve_paths(data, base, EVAL_PATH_KEYS), base)


def _relative_to_file(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """YAML paths given as a pipeline's `config` are relative to the file too (`read_yaml` did
    the `path`, `entities` and `root` keys; a `config` may also be a preset name)."""
    pipelines = data.get("pipelines")
    if isinstance(pipelines, list):
        data = {
            **data,
            "pipelines": [
                {**p, "config": resolve_path(p["config"], base)}
                if isinstance(p, dict) and isinstance(p.get("config"), str) and p["config"].endswith((".yaml", ".yml"))
                else p
                for p in pipelines
            ],
        }
    return data
