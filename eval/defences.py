"""Honest evaluation of the image defences: each defence clean, under a non-adaptive PGD and under
the adaptive attacks that know it is there, side by side.

Tramèr et al. (NeurIPS 2020, "On adaptive attacks to adversarial example defenses") show that
most published input-transformation and detection defences fell to attacks written for them.
So every defence here is scored against (a) plain PGD on the bare model, the number a defence
paper likes to quote, and (b) the adaptive attacks of `retlink.eval.attacks.adaptive` (BPDA and
EOT through its purifier, Athalye et al. 2018; a detector-aware loss for feature squeezing, Xu
et al. 2018). A sample counts as broken under "adaptive" when any of the defence's adaptive
attacks breaks it (the per-sample worst case, as AutoAttack reports).

Defences are `DefenceConfig`s, the very config the graph reads, and the image a defended
pipeline would caption is decided by the graph's own node functions (`agents/defender.py`): the
detector scores the image, a flagged image takes the purification route, a configured purifier
always applies. Two levels:

- model level (always): the tagger's top-1 label on the image the captioner would see (the agent
  config's `captioner.vision_model`); correct means equal to the undefended model's label on
  the clean image (the demo has no ImageNet labels, so clean accuracy of "none" is 1 by
  construction and a defence's clean cost is how often it changes a clean label). Most demo
  photos are far from ImageNet (a retina, a Hubble field, a brick wall), so these labels are
  low-confidence and even a mild purifier moves them;
- retrieval level (when the agent's KB has images): the entity whose KB image is nearest to the
  image the pipeline would embed, by the pipeline's own image embedder and chromadb store;
  correct means the gold entity. This is the image evidence the linker actually uses;
- link level (`links: true`): the full agent, `Linker` with each defence config, on the demo
  examples, correct means the gold KB entity; the attacks there are the same images.

The detector is also scored as a detector: ROC AUC of clean vs PGD scores, the false-positive
rate at its threshold on clean images, and its detection rate on PGD and detector-aware images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from retlink.config import DefenceConfig, PurifyStep
from retlink.errors import ConfigError
from retlink.eval.config import SurrogateName
from retlink.eval.metrics import accuracy, bootstrap_ci

log = logging.getLogger(__name__)

NON_ADAPTIVE = "pgd"
ADAPTIVE = "adaptive"
CLEAN = "clean"


class DefenceSpec(BaseModel):
    """One defence to evaluate: a name and the graph's defence config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    defence: DefenceConfig = DefenceConfig()


def default_defences() -> list[DefenceSpec]:
    """No defence, purification (JPEG 75), detection with routing, and both."""
    jpeg = [PurifyStep(kind="jpeg", quality=75)]
    on = {"enabled": True}
    return [
        DefenceSpec(name="none"),
        DefenceSpec(name="purify", defence=DefenceConfig(purify=jpeg)),
        DefenceSpec(name="detect", defence=DefenceConfig.model_validate({"detector": on})),
        DefenceSpec(
            name="purify+detect", defence=DefenceConfig.model_validate({"purify": jpeg, "detector": on})
        ),
    ]


class DefenceEvalConfig(BaseModel):
    """What `evaluate` runs (a YAML file of these keys for `retlink eval defences CONFIG`)."""

    model_config = ConfigDict(extra="forbid")

    #: the demo folder (examples.jsonl, entities.jsonl, images/)
    data: Path = Path(__file__).resolve().parents[1] / "data" / "demo"
    limit: int | None = Field(None, ge=1)
    defences: list[DefenceSpec] = Field(default_factory=default_defences)
    #: what the attacks aim at: the tagger's label (`classifier`), or the image embedding, away
    #: from the gold entity's KB image and toward the nearest wrong one's
    #: (`embedding_toward_distractor`, what `eval/configs/defences.yaml` attacks at link level)
    target: Literal["classifier", "embedding_toward_distractor"] = "embedding_toward_distractor"
    #: the network the attacks are made on (the eval runner's attack `surrogate` names: one
    #: EfficientNet-Lite or the ensemble of both); a detector on another network
    #: (`defence.detector.model`) is attacked on its own by the detector-aware attack
    surrogate: SurrogateName = "efficientnet_lite0"
    #: attack preset and overrides shared by every attack (eps, alpha, steps, restarts)
    preset: str = "normal"
    params: dict[str, Any] = Field(default_factory=dict)
    eot_samples: int = Field(4, ge=1)
    seed: int = 0
    #: also link with the full agent under each defence (slow: one agent link per cell)
    links: bool = False
    #: the agent's config (preset name, path or dict) the defence configs are merged into; its
    #: KB and image embedder also score the retrieval level
    agent: Any = None
    bootstrap_resamples: int = Field(1000, ge=10)
    confidence: float = Field(0.95, gt=0, lt=1)


# -- the defended view, by the graph's own node functions ------------------------------------------


def to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> 8-bit PIL (what an uploaded PNG of the attacked image would hold)."""
    arr = (x.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr)


@dataclass
class View:
    """What a defended pipeline's captioner sees for one image, and why."""

    image: Image.Image
    flagged: bool
    score: float | None


def defended_view(image: Image.Image, cfg: DefenceConfig, detector: Any) -> View:
    """Run the graph's detect and purify nodes on one image (the same functions, same routes)."""
    from retlink.agents.defender import detect, purification_steps, purify, route_after_detect

    state: dict[str, Any] = {"pil": image}
    out = detect(state, detector=detector, cfg=cfg.detector)
    score = max(out["_detail"]["scores"].values()) if "_detail" in out else None
    state.update({k: v for k, v in out.items() if not k.startswith("_")})
    if route_after_detect(state, cfg=cfg) == "purify" and purification_steps(state, cfg):
        state["pil"] = purify(state, cfg=cfg)["pil"]
    return View(state["pil"], bool(state.get("perturbed")), score)


# -- adaptive attacks matched to a defence -----------------------------------------------------------


def adaptive_attacks(
    cfg: DefenceConfig, eot_samples: int, network: str = "efficientnet_lite0"
) -> list[tuple[str, dict[str, Any]]]:
    """The adaptive attacks (name, overrides) an attacker who knows `cfg` would run against a
    pipeline whose attacked network is `network`.

    - purification always on: EOT+BPDA through it;
    - detector on: a detector-aware attack through what an unflagged image meets (the configured
      purifier, or nothing), keeping the squeeze score low on the detector's own network
      (`classifier`, named only when it is not `network`), and EOT+BPDA through the flagged
      route's purifier (the attacker who accepts being flagged and survives the purification);
    - no defence: plain PGD is already adaptive (nothing to adapt to), so none is added.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    always = [s.model_dump() for s in cfg.purify]
    if cfg.detector.enabled:
        det: dict[str, Any] = {
            "squeezers": [s.model_dump() for s in cfg.detector.squeezers],
            "threshold": cfg.detector.threshold,
        }
        if cfg.detector.model != network:
            det["classifier"] = cfg.detector.model
        out.append(("pgd_detector_aware", {"purify": always, "eot_samples": eot_samples, **det}))
        flagged = always or [s.model_dump() for s in cfg.purify_when_flagged]
        if flagged:
            out.append(("pgd_eot", {"purify": flagged, "eot_samples": eot_samples}))
    elif always:
        out.append(("pgd_eot", {"purify": always, "eot_samples": eot_samples}))
    return out


def attack_key(name: str, overrides: dict[str, Any]) -> str:
    """A short stable key, so two defences needing the same attack share its images."""
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:6]
    return f"{name}[{digest}]" if overrides else name


# -- results ------------------------------------------------------------------------------------


@dataclass
class Cell:
    """Per-sample correctness (and detector flags) of one defence under one condition."""

    correct: list[bool]
    flagged: list[bool] = field(default_factory=list)

    def acc(self) -> float:
        return accuracy(self.correct)


@dataclass
class DefenceResults:
    """Everything the report needs; JSON round-trippable."""

    samples: list[str]
    levels: dict[str, dict[str, dict[str, Cell]]]  # level -> defence -> condition -> cell
    detector: dict[str, Any]
    attacks: dict[str, Any]  # "by_defence": {defence: [adaptive attack keys]}, "params": {key: params}
    seconds: dict[str, float]
    config: dict[str, Any]
    #: the images behind every condition (clean, pgd, attack keys); not serialised
    images: dict[str, list[Image.Image]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "levels": {
                lv: {
                    d: {c: {"correct": cell.correct, "flagged": cell.flagged} for c, cell in conds.items()}
                    for d, conds in defs.items()
                }
                for lv, defs in self.levels.items()
            },
            "detector": self.detector,
            "attacks": self.attacks,
            "seconds": self.seconds,
            "config": self.config,
        }


def roc_auc(negatives: list[float], positives: list[float]) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties half
    (the Mann-Whitney statistic; no sklearn needed)."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    if not neg.size or not pos.size:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def summarise(
    results: DefenceResults, level: str, *, resamples: int = 1000, confidence: float = 0.95
) -> list[dict[str, Any]]:
    """One row per defence: accuracy with CIs per condition, clean cost, share of the undefended
    drop recovered (non-adaptive and adaptive), with paired bootstrap CIs where they compare."""
    defs = results.levels[level]
    ref = defs.get("none")
    rows = []
    for name, conds in defs.items():
        row: dict[str, Any] = {"defence": name}
        for cond, cell in conds.items():
            row[cond] = cell.acc()
            row[f"{cond}_ci"] = bootstrap_ci(
                np.asarray(cell.correct, float), n_resamples=resamples, confidence=confidence
            )
            if cell.flagged:
                row[f"{cond}_flagged"] = float(np.mean(cell.flagged))
        if ref is not None:
            diff = np.asarray(conds[CLEAN].correct, float) - np.asarray(ref[CLEAN].correct, float)
            row["clean_cost"] = -float(diff.mean())
            row["clean_cost_ci"] = tuple(
                -v for v in reversed(bootstrap_ci(diff, n_resamples=resamples, confidence=confidence))
            )
            undefended_drop = ref[CLEAN].acc() - ref[NON_ADAPTIVE].acc()
            for cond in (NON_ADAPTIVE, ADAPTIVE):
                if cond in conds:
                    gain = conds[cond].acc() - ref[NON_ADAPTIVE].acc()
                    row[f"{cond}_gain"] = gain
                    row[f"{cond}_recovered"] = gain / undefended_drop if undefended_drop > 0 else float("nan")
        rows.append(row)
    return rows


# -- running ------------------------------------------------------------------------------------


def load_examples(data: Path, limit: int | None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (data / "examples.jsonl").read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def evaluate(
    config: DefenceEvalConfig | dict[str, Any] | None = None, *, linker_factory: Any = None
) -> DefenceResults:
    """Attack once per (attack, parameters), then score every defence on every condition.

    `linker_factory(defence_config_dict) -> Linker` builds the agent for the link level (default:
    `Linker.from_config` of `config.agent` with the defence merged in).
    """
    from retlink.backends import open_kb
    from retlink.config import load_config
    from retlink.eval.attacked import LabelMaker, build_target, surrogate
    from retlink.eval.attacks import build_attack
    from retlink.tools.vision.detector import SqueezeDetector
    from retlink.tools.vision.efficientnet import INPUT_SIZE, preprocess, shared_network

    cfg = config if isinstance(config, DefenceEvalConfig) else DefenceEvalConfig.model_validate(config or {})
    agent = load_config(cfg.agent)
    model = surrogate(cfg.surrogate)  # what the attacks are made on
    tagger = shared_network(agent.captioner.vision_model)  # what the model level scores
    examples = load_examples(cfg.data, cfg.limit)
    golds = [ex["gold"] for ex in examples]
    x = torch.stack([preprocess(Image.open(cfg.data / ex["image"])) for ex in examples])
    x = (x * 255).round() / 255  # the 8-bit image a user would upload
    with torch.inference_mode():
        labels = tagger(x).argmax(-1).clone()
        own = labels if model is tagger else model(x).argmax(-1).clone()  # the surrogate's clean labels
    kb = open_kb(agent)
    if cfg.target == "classifier":
        y: Any = own
    elif kb.has_images:
        y, _ = LabelMaker(kb, model, INPUT_SIZE).toward_distractor(x, golds)
    else:
        raise ConfigError(
            f"target {cfg.target!r} needs a KB with images; the agent's KB at {kb.where} has none"
        )
    target = build_target(cfg.target, model)
    seconds: dict[str, float] = {}
    made: dict[str, dict[str, Any]] = {}

    def run_attack(name: str, overrides: dict[str, Any]) -> list[Image.Image]:
        started = time.perf_counter()
        attack = build_attack(name, target, cfg.preset, **{**cfg.params, **overrides, "seed": cfg.seed})
        adv = attack(x, y)
        key = attack_key(name, overrides)
        seconds[key] = round(time.perf_counter() - started, 2)
        made[key] = {**attack.params, "surrogate": cfg.surrogate}
        log.info("%s: %d images in %.1f s", key, len(adv), seconds[key])
        return [to_pil(a) for a in adv]

    images: dict[str, list[Image.Image]] = {
        CLEAN: [to_pil(a) for a in x],
        NON_ADAPTIVE: run_attack("pgd", {}),
    }
    plan: dict[str, list[str]] = {}
    for spec in cfg.defences:
        keys = []
        for name, overrides in adaptive_attacks(spec.defence, cfg.eot_samples, cfg.surrogate):
            key = attack_key(name, overrides)
            if key not in images:
                images[key] = run_attack(name, overrides)
            keys.append(key)
        plan[spec.name] = keys

    scorers = {"model": lambda views: tagger_correct(tagger, views, labels)}
    if kb.has_images:
        scorers["retrieval"] = lambda views: retrieval_correct(kb, views, golds)
    levels: dict[str, dict[str, dict[str, Cell]]] = {level: {} for level in scorers}
    detector_scores: dict[str, list[float]] = {}
    for spec in cfg.defences:
        dc = spec.defence.detector
        det = SqueezeDetector(shared_network(dc.model), dc.squeezers) if dc.enabled else None
        views = {key: [defended_view(img, spec.defence, det) for img in imgs] for key, imgs in images.items()}
        if det is not None:
            for key, vs in views.items():
                detector_scores.setdefault(f"{spec.name}|{key}", [v.score for v in vs])
        flagged = {key: [v.flagged for v in vs] for key, vs in views.items()}
        for level, score in scorers.items():
            correct = {key: score(vs) for key, vs in views.items()}
            levels[level][spec.name] = conditions(correct, flagged, plan[spec.name])

    if cfg.links:
        levels["link"] = link_level(cfg, examples, images, plan, linker_factory)

    return DefenceResults(
        samples=[ex["id"] for ex in examples],
        levels=levels,
        detector=detector_summary(cfg, detector_scores, plan),
        attacks={"by_defence": plan, "params": made},
        seconds=seconds,
        config=cfg.model_dump(mode="json"),
        images=images,
    )


def tagger_correct(model: torch.nn.Module, views: list[View], labels: torch.Tensor) -> list[bool]:
    """Model level: the tagger's top-1 on each defended view equals its clean label."""
    from retlink.tools.vision.efficientnet import preprocess

    with torch.inference_mode():
        pred = model(torch.stack([preprocess(v.image) for v in views])).argmax(-1)
    return (pred == labels).tolist()


def retrieval_correct(kb: Any, views: list[View], golds: list[str]) -> list[bool]:
    """Retrieval level: the entity with the nearest KB image to each defended view is the gold one."""
    vectors = kb.image_embedder.embed_images([v.image for v in views])
    return [
        bool((hits := kb.query_image(vec, 1)) and hits[0][0] == gold)
        for vec, gold in zip(vectors, golds, strict=True)
    ]


def conditions(
    correct: dict[str, list[bool]], flagged: dict[str, list[bool]], adaptive_keys: list[str]
) -> dict[str, Cell]:
    """clean / pgd / adaptive cells of one defence from per-image correctness and flags under every
    attack; adaptive = per-sample worst case over its adaptive attacks and plain PGD (an adaptive
    attacker may also just run PGD)."""
    cells = {cond: Cell(list(correct[cond]), list(flagged[cond])) for cond in (CLEAN, NON_ADAPTIVE)}
    worst = Cell(list(correct[NON_ADAPTIVE]), list(flagged[NON_ADAPTIVE]))
    for key in adaptive_keys:
        for i, good in enumerate(correct[key]):
            if good:
                continue
            # the attacker uses the attack that breaks sample i, preferring one that is not flagged
            if worst.correct[i] or (worst.flagged[i] and not flagged[key][i]):
                worst.correct[i], worst.flagged[i] = False, flagged[key][i]
    cells[ADAPTIVE] = worst
    return cells


def detector_summary(
    cfg: DefenceEvalConfig, scores: dict[str, list[float]], plan: dict[str, list[str]]
) -> dict[str, Any]:
    """ROC AUC (clean vs PGD), FPR on clean at the threshold, detection rates under attack, for
    the first defence that runs the detector (they all share its scores)."""
    spec = next((s for s in cfg.defences if s.defence.detector.enabled), None)
    if spec is None:
        return {}
    thr = spec.defence.detector.threshold
    clean, pgd = scores[f"{spec.name}|{CLEAN}"], scores[f"{spec.name}|{NON_ADAPTIVE}"]
    aware = next((k for k in plan[spec.name] if k.startswith("pgd_detector_aware")), None)
    out: dict[str, Any] = {
        "defence": spec.name,
        "threshold": thr,
        "roc_auc_pgd": roc_auc(clean, pgd),
        "fpr_clean": float(np.mean(np.asarray(clean) > thr)),
        "tpr_pgd": float(np.mean(np.asarray(pgd) > thr)),
        "scores": {CLEAN: clean, NON_ADAPTIVE: pgd},
    }
    if aware:
        out["scores"]["detector_aware"] = scores[f"{spec.name}|{aware}"]
        out["roc_auc_detector_aware"] = roc_auc(clean, scores[f"{spec.name}|{aware}"])
        out["tpr_detector_aware"] = float(np.mean(np.asarray(scores[f"{spec.name}|{aware}"]) > thr))
    return out


def link_level(
    cfg: DefenceEvalConfig,
    examples: list[dict[str, Any]],
    images: dict[str, list[Image.Image]],
    plan: dict[str, list[str]],
    linker_factory: Any,
) -> dict[str, dict[str, Cell]]:
    """The full agent under each defence: correct = the gold entity."""
    if linker_factory is None:
        linker_factory = default_linker_factory(cfg.agent)
    out: dict[str, dict[str, Cell]] = {}
    for spec in cfg.defences:
        linker = linker_factory(spec.defence.model_dump(mode="json"))
        correct: dict[str, list[bool]] = {}
        flagged: dict[str, list[bool]] = {}
        for key in [CLEAN, NON_ADAPTIVE, *plan[spec.name]]:
            results = [
                linker.link(img, ex["mention"], ex["context"])
                for img, ex in zip(images[key], examples, strict=True)
            ]
            correct[key] = [r.entity_id == ex["gold"] for r, ex in zip(results, examples, strict=True)]
            flagged[key] = [bool(r.perturbed) for r in results]
        out[spec.name] = conditions(correct, flagged, plan[spec.name])
    return out


def default_linker_factory(agent: Any) -> Any:
    """`Linker.from_config(agent config + {defence: ...})`."""
    from retlink import Linker
    from retlink.config import load_config
    from retlink.eval.pipelines import deep_merge

    base = load_config(agent).model_dump(mode="json")

    def make(defence: dict[str, Any]) -> Any:
        return Linker.from_config(deep_merge(base, {"defence": defence}))

    return make


# -- report -------------------------------------------------------------------------------------


LEVEL_MEANING = {
    "model": "tagger top-1 vs the undefended clean label",
    "retrieval": "KB image retrieval top-1 vs the gold entity",
    "link": "full agent, gold entity",
}
TARGET_MEANING = {
    "classifier": "tagger's label",
    "embedding_toward_distractor": "image embedding (toward the nearest wrong entity's KB image)",
}


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.0f}%"


def _ci(ci: tuple[float, float]) -> str:
    return f"[{100 * ci[0] + 0.0:.0f}, {100 * ci[1] + 0.0:.0f}]"


def report_markdown(results: DefenceResults) -> str:
    """The "Defences" section of an eval report: per level, each defence clean / PGD / adaptive
    with 95% bootstrap CIs, clean cost and recovered share; then the detector as a detector."""
    cfg = results.config
    lines = [
        "## Defences",
        "",
        f"{len(results.samples)} samples; attacks aimed at the {TARGET_MEANING[cfg.get('target', 'classifier')]}: "
        f"`pgd` ({cfg['preset']}, {cfg['params'] or 'preset values'}) on the "
        f"bare model, surrogate `{cfg.get('surrogate', 'efficientnet_lite0')}` (non-adaptive) and, "
        f"per defence, the adaptive attacks that know it (BPDA/EOT with "
        f"{cfg['eot_samples']} samples, detector-aware); 'adaptive' is the per-sample worst case of those and PGD.",
        "Recovered = (defended - undefended accuracy under the attack) / (undefended drop under PGD).",
        "",
    ]
    for level in results.levels:
        rows = summarise(results, level, resamples=cfg["bootstrap_resamples"], confidence=cfg["confidence"])
        what = LEVEL_MEANING.get(level, level)
        lines += [
            f"### {level} level ({what})",
            "",
            "| defence | clean | clean cost (lost) | PGD | adaptive | recovered (PGD) | recovered (adaptive) | flagged clean / PGD / adaptive |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            flags = " / ".join(
                _pct(r.get(f"{c}_flagged", float("nan"))) for c in (CLEAN, NON_ADAPTIVE, ADAPTIVE)
            )
            lines.append(
                f"| {r['defence']} | {_pct(r[CLEAN])} {_ci(r[f'{CLEAN}_ci'])} | "
                f"{100 * r.get('clean_cost', float('nan')) + 0.0:+.0f} pts {_ci(r.get('clean_cost_ci', (float('nan'),) * 2))} | "
                f"{_pct(r[NON_ADAPTIVE])} {_ci(r[f'{NON_ADAPTIVE}_ci'])} | {_pct(r[ADAPTIVE])} {_ci(r[f'{ADAPTIVE}_ci'])} | "
                f"{_pct(r.get(f'{NON_ADAPTIVE}_recovered', float('nan')))} | {_pct(r.get(f'{ADAPTIVE}_recovered', float('nan')))} | {flags} |"
            )
        lines.append("")
    det = results.detector
    if det:
        lines += [
            f"### Detector (feature squeezing, threshold {det['threshold']})",
            "",
            f"- ROC AUC clean vs PGD: {det['roc_auc_pgd']:.2f}; false-positive rate on clean images: {_pct(det['fpr_clean'])}; "
            f"detection rate on PGD: {_pct(det['tpr_pgd'])}.",
        ]
        if "tpr_detector_aware" in det:
            lines.append(
                f"- Detector-aware attack: detection rate {_pct(det['tpr_detector_aware'])}, "
                f"ROC AUC clean vs it {det['roc_auc_detector_aware']:.2f}."
            )
        lines.append(
            "- The threshold was calibrated on these same demo images (in-sample); expect a higher "
            "false-positive rate on other data."
        )
        lines.append("")
    return "\n".join(lines)


def write(results: DefenceResults, out: Path) -> Path:
    """`defences.json` and `defences.md` in `out`; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "defences.json").write_text(json.dumps(results.to_json(), indent=2))
    md = out / "defences.md"
    md.write_text(report_markdown(results))
    return md


def load_defence_config(
    source: str | Path | dict[str, Any] | None,
    *,
    limit: int | None = None,
    links: bool | None = None,
    target: str | None = None,
    surrogate: str | None = None,
) -> DefenceEvalConfig:
    """A validated config from YAML (paths relative to the file), a dict or None (defaults), with
    the CLI's overrides; ConfigError names the bad key."""
    from retlink.config import _read_yaml, validate_config
    from retlink.eval.config import _resolve

    data: dict[str, Any] = {}
    origin = "defaults"
    if isinstance(source, dict):
        data, origin = dict(source), "dict"
    elif source is not None:
        data, origin = _read_yaml(Path(source)), str(source)
        if isinstance(data.get("data"), str):
            data["data"] = _resolve(data["data"], Path(source).parent)  # as the runner's dataset.root
    if "pipelines" in data and "defences" not in data:
        raise ConfigError(
            f"{origin} is a `retlink eval run` config (it lists pipelines), not a defence eval config; "
            f"run it with `retlink eval run {origin}`"
        )
    overrides = {"limit": limit, "links": links, "target": target, "surrogate": surrogate}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_config(DefenceEvalConfig, data, origin)


def print_summary(results: DefenceResults, console: Any) -> None:
    """The report's tables on the terminal (rich)."""
    from rich.table import Table

    for level in results.levels:
        table = Table(
            "defence",
            "clean",
            "clean cost",
            "PGD",
            "adaptive",
            "recovered PGD",
            "recovered adaptive",
            title=f"defences, {level} level ({len(results.samples)} samples)",
        )
        for r in summarise(results, level, resamples=results.config["bootstrap_resamples"]):
            table.add_row(
                r["defence"],
                _pct(r[CLEAN]),
                f"{100 * r.get('clean_cost', float('nan')) + 0.0:+.0f} pts",
                _pct(r[NON_ADAPTIVE]),
                _pct(r[ADAPTIVE]),
                _pct(r.get(f"{NON_ADAPTIVE}_recovered", float("nan"))),
                _pct(r.get(f"{ADAPTIVE}_recovered", float("nan"))),
            )
        console.print(table)
    det = results.detector
    if det:
        console.print(
            f"detector (threshold {det['threshold']}): ROC AUC clean vs PGD {det['roc_auc_pgd']:.2f}, "
            f"FPR clean {_pct(det['fpr_clean'])}, detected PGD {_pct(det['tpr_pgd'])}, "
            f"detected detector-aware {_pct(det.get('tpr_detector_aware', float('nan')))}"
        )
