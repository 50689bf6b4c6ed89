"""`retlink train CONFIG`: fit the decision head on the dev (or train) split of one dataset, or
of several (a generic head); a config with `kind: encoder` adversarially fine-tunes the image
embedder instead (`retlink.train.encoder`).

The links come from the one evaluation runner (`retlink.eval.runner`), so training data is made
exactly as evaluation data is: the same pipelines, stored attacked images (PGD, the adaptive
EOT-through-purification attack, ...), the `augment` attack for MAT-style one-to-many image
augmentation and text perturbation settings (word dropout) for the text side, resumable runs.
The runner writes each link's candidate-pool features into its record (`record_features`);
this module turns those records into training groups and fits `DecisionHead`.

`scope` says what the head is bound to. A `kb` head (the default) is fitted on one KB and
refused on any other: its weights follow that KB's similarity distributions. An `embedders` head
is fitted on several benchmarks' dev splits (`eval` a list, one eval config each) and bound only
to the text and image embedders all their KBs share: the features are similarities, gaps and
ranks that mean the same on any KB those embedders built, so it is what a KB without a head of
its own can use (`decision: {head: generic}` names the one the package ships).

The head's dev metrics are cross-validated by sample (every attacked or augmented copy of a
sample sits in the same fold), so they are not in-sample numbers.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from retlink.agent.decision import DecisionHead, Group, embedder_fingerprint, kb_fingerprint
from retlink.agent.decision.head import FALLBACK_FEATURE
from retlink.core.config import StrictModel, read_yaml, validate_config
from retlink.core.errors import ConfigError, DatasetError
from retlink.core.schema import LLMConfig
from retlink.core.types import NIL

log = logging.getLogger(__name__)

#: pipeline kinds that decide with a head and record its features
HEAD_KINDS = ("agent", "certified")


class CotAugment(StrictModel):
    """Chain-of-thought augmentation of the training links (the text-centric adversarial prompting
    paper's reasoning augmentation, Tsai et al. 2024): for every setting of the eval config
    without a text perturbation, a copy whose sentence has the LLM's chain of thought about the
    mention appended (`text: {kind: llm_perturb, instruction: reasoning}`), linked by the same
    pipelines under the same conditions, so the head is fitted on those links too.

    What the head can take from it: its features are the candidate pool's similarities, ranks,
    gaps and matches, computed before any LLM runs, so the rationale reaches the head only through
    the text embedder's query (the text similarities of each candidate); the reasoner node's own
    chain of thought at link time comes after the head's ranking and is no feature of it. The
    augmentation is therefore a text-side augmentation (like word dropout): more, differently
    worded links of the same samples, not a new signal at evaluation time."""

    #: the model that thinks (None: the embedded in-process SmolLM2, the default reasoner's model)
    llm: LLMConfig | None = None
    #: the most tokens of thought per sentence
    max_tokens: int = Field(48, ge=8, le=512)


class TrainConfig(StrictModel):
    """What `retlink train` reads for the decision head (`kind: head`, the default)."""

    #: `head` (this) or `encoder` (`retlink.train.encoder`: adversarial fine-tuning of the image
    #: embedder)
    kind: Literal["head"] = "head"
    #: the head's name (its default file is `<kb path>.<name>.head.json`, beside the KB)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    #: an eval runner config (YAML path, relative to this file, or inline mapping) over the
    #: split to fit on, or a list of them (one per benchmark); `record_features` is switched on
    eval: Any
    #: which of its pipelines' links to fit on (`agent` pipelines, or `certified` ones for a head
    #: whose answers carry a certificate; several, e.g. with and without purification, so the
    #: head learns how each defence changes the signals); every eval config of a list must have
    #: them, and they must compute the same features
    pipelines: list[str] = Field(min_length=1)
    #: `kb`: bound to the one KB it is fitted on; `embedders`: bound to the embedders only, for
    #: any KB they built (fit it on several benchmarks)
    scope: Literal["kb", "embedders"] = "kb"
    #: the penalty's strength, or a list to choose from on the training links themselves: by
    #: leaving each benchmark out in turn when the links come from several (the strength whose
    #: worst held-out benchmark gains most over the agent's own ranking), else by sample folds
    l2: float | list[float] = 1e-2
    #: what the penalty pulls the weights toward: zero (`none`), or the head that ranks by the
    #: agent's own fused score (`fallback`; agent links only): with little data the head stays
    #: the ranking that does not lose to the baseline
    prior: Literal["none", "fallback"] = "none"
    folds: int = Field(5, ge=2, le=20)

    @field_validator("l2")
    @classmethod
    def _l2(cls, v: float | list[float]) -> float | list[float]:
        values = v if isinstance(v, list) else [v]
        if not values or any(x < 0 for x in values):
            raise ValueError("give one strength >= 0 or a non-empty list of them")
        return v
    #: where to write the head; required for a list of evals (no one KB to write it beside)
    out: Path | None = None
    #: add links whose sentence carries the LLM's chain of thought (None: off); see `CotAugment`
    cot_augment: CotAugment | None = None


def config_kind(source: str | Path | dict[str, Any]) -> str:
    """What a train config fits: `head` (the default) or `encoder`; read before validation so
    each kind's model validates it completely."""
    data = source if isinstance(source, dict) else read_yaml(Path(source), set())
    kind = data.get("kind", "head")
    if kind not in ("head", "encoder"):
        raise ConfigError(f"invalid configuration ({source if not isinstance(source, dict) else 'dict'}):\n  kind: {kind!r}, expected head or encoder")
    return kind


def load_train_config(source: str | Path | dict[str, Any]) -> tuple[TrainConfig, list[Any]]:
    """The train config and its eval configs, one per benchmark (validated completely before
    anything runs)."""
    from retlink.eval.config import EvalConfig, load_eval_config, relative_to_file

    if isinstance(source, dict):
        data, base, origin = source, Path.cwd(), "dict"
    else:
        # the one config reader: `out` and an `eval` file path resolve like every config path
        path = Path(source)
        data, base, origin = read_yaml(path, {"out", "eval"}), path.parent, str(path)
    cfg = validate_config(TrainConfig, data, origin)
    sources = cfg.eval if isinstance(cfg.eval, list) else [cfg.eval]
    if not sources:
        raise ConfigError(f"invalid configuration ({origin}):\n  eval: an empty list")
    if len(sources) > 1 and cfg.out is None:
        raise ConfigError(f"invalid configuration ({origin}):\n  out: name the head's file (several evals, no one KB to write it beside)")
    ecfgs = []
    for i, ev in enumerate(sources):
        where = "eval" if len(sources) == 1 else f"eval[{i}]"
        if isinstance(ev, dict) and not isinstance(source, dict):
            ev = relative_to_file(ev, base)  # an inline eval config's paths are relative to this file
        if not isinstance(ev, str | Path | dict):
            raise ConfigError(f"invalid configuration ({origin}):\n  {where}: a path or a mapping")
        ecfg = load_eval_config(ev)
        ecfg = EvalConfig.model_validate({**ecfg.model_dump(), "record_features": True})
        if cfg.cot_augment is not None:
            ecfg = with_cot_settings(ecfg, cfg.cot_augment, cfg.pipelines)
        kinds = {p.name: p.kind for p in ecfg.pipelines}
        for name in cfg.pipelines:
            if name not in kinds:
                raise ConfigError(f"invalid configuration ({origin}):\n  pipelines: no pipeline named {name!r} in {where}")
            if kinds[name] not in HEAD_KINDS:
                raise ConfigError(
                    f"invalid configuration ({origin}):\n  pipelines: {name!r} is a {kinds[name]}; a head is fitted on "
                    f"the links of {' or '.join(HEAD_KINDS)} pipelines"
                )
        if ecfg.dataset.split is None:
            raise ConfigError(f"invalid configuration ({origin}):\n  {where}.dataset.split: name the split to fit on (dev or train)")
        ecfgs.append(ecfg)
    return cfg, ecfgs


#: the suffix of a chain-of-thought augmented setting's name
COT_SUFFIX = "-cot"


def with_cot_settings(ecfg: Any, cot: CotAugment, pipelines: list[str]) -> Any:
    """`ecfg` with one chain-of-thought copy of each setting that has a sentence and no text
    perturbation (`<name>-cot`), run by the trained pipelines under the same conditions."""
    from retlink.eval.config import EvalConfig

    data = ecfg.model_dump()
    added = []
    for s in ecfg.settings:
        if s.text is not None or s.setting in ("i2t", "image_only"):  # no sentence to think about
            continue
        text = {"kind": "llm_perturb", "instruction": "reasoning", "max_tokens": cot.max_tokens}
        if cot.llm is not None:
            text["llm"] = cot.llm.model_dump()
        pipes = [p for p in (s.pipelines or [p.name for p in ecfg.pipelines]) if p in pipelines]
        added.append({**s.model_dump(), "name": s.name + COT_SUFFIX, "text": text, "pipelines": pipes})
    if not added:
        raise ConfigError("cot_augment: no setting with a sentence to augment (it2t, i2t_mention or text_only)")
    data["settings"] = [*data["settings"], *added]
    return EvalConfig.model_validate(data)


def groups_from_records(
    records: list[dict[str, Any]], pipelines: list[str], reasoner_out: list[tuple[Group, dict[str, Any]]] | None = None
) -> tuple[list[Group], list[str], Counter]:
    """Training groups (and their sample ids) from run records; the counter says what was left
    out. Links with reasoner answers are also appended to `reasoner_out` with their features."""
    groups, sample_ids, skipped = [], [], Counter()
    for rec in records:
        if rec.get("pipeline") not in pipelines:
            continue
        feats = rec.get("features")
        if rec.get("status") != "ok" or not feats:
            skipped["failed or no features"] += 1
            continue
        ids, gold = feats["ids"], rec["gold"]
        if gold in ids:
            index = ids.index(gold)
        elif gold == NIL:
            index = len(ids)
        else:
            skipped["gold not in the pool"] += 1
            continue
        rows = np.array(feats["rows"], dtype=np.float64).reshape(len(ids), len(feats["names"]))
        group = Group(rows=rows, nil=np.array(feats["nil"], dtype=np.float64), gold=index)
        groups.append(group)
        sample_ids.append(rec["sample_id"])
        if reasoner_out is not None and feats.get("reasoner"):
            reasoner_out.append((group, feats))
    return groups, sample_ids, skipped


def feature_names_of(
    records: list[dict[str, Any]], pipelines: list[str], default: tuple[list[str], list[str]]
) -> tuple[list[str], list[str]]:
    """The candidate and NIL feature names the pipelines' records carry (one set: a head has one
    feature list); `default` when no record names its NIL row (the agent's)."""
    found = {
        (tuple(f["names"]), tuple(f.get("nil_names") or default[1]))
        for rec in records
        if rec.get("pipeline") in pipelines and (f := rec.get("features"))
    }
    if len(found) > 1:
        raise ConfigError(f"pipelines {pipelines} record different features ({sorted(found)}); fit one head per feature set")
    if not found:
        return default
    names, nil_names = found.pop()
    return list(names), list(nil_names)


def feature_definition_of(records: list[dict[str, Any]], pipelines: list[str]) -> str | None:
    """How the pipelines' recorded features were computed (`PoolFeatures.definition`), None when
    no record says; links computed two ways are refused (one head, one feature set)."""
    found = {
        d for rec in records if rec.get("pipeline") in pipelines and (d := (rec.get("features") or {}).get("definition"))
    }
    if len(found) > 1:
        raise ConfigError(
            f"pipelines {pipelines} recorded features computed in {len(found)} ways ({sorted(found)}); "
            "relink the older runs (delete their folders) and fit again"
        )
    return found.pop() if found else None


def fallback_accuracy(groups: list[Group], features: list[str]) -> float:
    """Accuracy of the agent's own ranking on `groups`: the top `fused_gap` (it never says NIL)."""
    k = features.index(FALLBACK_FEATURE)
    hits = [len(g.rows) > 0 and int(np.argmax(g.rows[:, k])) == g.gold for g in groups]
    return float(np.mean(hits)) if hits else 0.0


def choose_l2(
    groups: list[Group], sample_ids: list[str], features: list[str], nil_features: list[str], cfg: TrainConfig
) -> tuple[float, dict[str, Any]]:
    """The penalty strength of `cfg.l2` (a list) that does best on links it was not fitted on.

    Several benchmarks: each is held out in turn and the head fitted on the rest; a strength
    scores the smallest gain over the own ranking among the held-out benchmarks (a generic head
    must not lose on the KB it has never seen). One benchmark: cross-validated accuracy."""
    values = cfg.l2 if isinstance(cfg.l2, list) else [cfg.l2]
    if len(values) == 1:
        return values[0], {}
    bench = [s.split(":", 1)[0] for s in sample_ids]
    names = sorted(set(bench))
    scores: dict[str, Any] = {}
    for l2 in values:
        if len(names) > 1:
            gains = {}
            for name in names:
                train = [g for g, b in zip(groups, bench, strict=True) if b != name]
                held = [g for g, b in zip(groups, bench, strict=True) if b == name]
                head = DecisionHead.fit(train, features, nil_features, l2=l2, prior=_prior(cfg))
                base = fallback_accuracy(held, features) if FALLBACK_FEATURE in features else 0.0
                gains[name] = round(head.evaluate(held)["accuracy"] - base, 4)
            scores[str(l2)] = {"held_out_gain": gains, "score": min(gains.values())}
        else:
            cv = cross_validate(groups, sample_ids, features, nil_features, l2, cfg.folds, prior=_prior(cfg))
            scores[str(l2)] = {"cross_validated": cv, "score": cv.get("accuracy", 0.0)}
    best = max(values, key=lambda v: (scores[str(v)]["score"], v))  # ties: the stronger penalty
    return best, scores


def _prior(cfg: TrainConfig) -> str | None:
    return None if cfg.prior == "none" else cfg.prior


def sample_folds(sample_ids: list[str], folds: int) -> list[int]:
    """Each link's fold, by its sample id: every attacked or augmented copy of a sample lands in
    the same fold, so a held-out fold holds samples the head never saw in any form."""
    return [zlib.crc32(s.encode()) % folds for s in sample_ids]


def cross_validate(
    groups: list[Group], sample_ids: list[str], features: list[str], nil_features: list[str], l2: float, folds: int,
    prior: str | None = None,
) -> dict[str, float]:
    """Held-out metrics over `folds` folds split by sample id."""
    fold_of = sample_folds(sample_ids, folds)
    held: list[Group] = []
    preds: list[dict[str, float]] = []
    for k in range(folds):
        train = [g for g, f in zip(groups, fold_of, strict=True) if f != k]
        test = [g for g, f in zip(groups, fold_of, strict=True) if f == k]
        if not train or not test:
            continue
        head = DecisionHead.fit(train, features, nil_features, l2=l2, prior=prior)
        held += test
        preds.append({**head.evaluate(test)})
    if not preds:
        return {"n": 0}
    n = sum(p["n"] for p in preds)
    return {
        "n": n,
        **{m: round(sum(p[m] * p["n"] for p in preds) / n, 4) for m in ("accuracy", "nll", "ece")},
    }


def default_head_path(kb_path: Path, name: str) -> Path:
    """Beside the KB folder (a KB rebuild replaces the folder, not its siblings)."""
    return kb_path.parent / f"{kb_path.name}.{name}.head.json"


def _head_fingerprint(scope: str, manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """What the head is bound to: the one KB (`kb`) or the embedders every KB shares."""
    bind = kb_fingerprint if scope == "kb" else embedder_fingerprint
    found = [bind(m) for m in manifests]
    if any(f != found[0] for f in found[1:]):
        what = "KB" if scope == "kb" else "text and image embedders"
        raise ConfigError(
            f"the eval configs' KBs differ in their {what} ({found}); a {scope!r} head is fitted on one "
            + ("KB (use scope: embedders to fit across KBs)" if scope == "kb" else "pair of embedders")
        )
    return {**found[0], **({"scope": "embedders"} if scope == "embedders" else {})}


def _head_kb(runner: Any, ecfg: Any, pipelines: list[str]) -> tuple[Path, list[dict[str, Any]]]:
    """The KB the head's pipelines rank (a pipeline's own `kb`, else the run's) and the manifest
    of each: a head fitted on pipelines that embed with other weights into a KB of their own
    (`embedder.image_weights`) is bound to that KB, not to the run's, and written beside it."""
    import json

    from retlink.tools.kb.store import MANIFEST

    own = [p for p in ecfg.pipelines if p.name in pipelines and p.kb is not None]
    if not own:
        return ecfg.kb.path, [runner.kb().manifest]
    runner.ensure_kbs([p.name for p in own])  # built (with the pipeline's embedders) when missing or stale
    shared = [ecfg.kb.path] if len(own) < len([p for p in ecfg.pipelines if p.name in pipelines]) else []
    paths = [*shared, *(p.kb.path for p in own)]
    manifests = [json.loads((Path(path).expanduser() / MANIFEST).read_text()) for path in paths]
    return Path(paths[-1]), manifests


def train(source: str | Path | dict[str, Any], *, limit: int | None = None) -> tuple[Path, DecisionHead]:
    """Run each eval config's links (resuming), fit the head on all of them and write it."""
    from retlink.agent.decision.features import FEATURES, NIL_FEATURES
    from retlink.eval.runner import Runner
    from retlink.eval.runs import RESULTS, read_records

    cfg, ecfgs = load_train_config(source)
    runners = [Runner(ecfg) for ecfg in ecfgs]
    for runner, ecfg in zip(runners, ecfgs, strict=True):
        if not runner.samples(limit=1):
            raise DatasetError(
                f"dataset {ecfg.dataset.key!r} has no samples in split {ecfg.dataset.split!r}; "
                "the head is fitted on a dev or train split, never on the test split it is reported on"
            )
    kbs = [_head_kb(runner, ecfg, cfg.pipelines) for runner, ecfg in zip(runners, ecfgs, strict=True)]
    fingerprint = _head_fingerprint(cfg.scope, [manifest for _, manifests in kbs for manifest in manifests])
    records: list[dict[str, Any]] = []
    for runner in runners:
        runner.run(limit)
        records += read_records(runner.dir / RESULTS).values()
    answered: list[tuple[Group, dict[str, Any]]] = []
    groups, sample_ids, skipped = groups_from_records(records, cfg.pipelines, answered)
    if not groups:
        raise DatasetError(f"no usable links of pipelines {cfg.pipelines} in {[str(r.dir) for r in runners]} ({dict(skipped)})")
    features, nil_features = feature_names_of(records, cfg.pipelines, (list(FEATURES), list(NIL_FEATURES)))
    if cfg.prior == "fallback" and FALLBACK_FEATURE not in features:
        raise ConfigError(f"prior: 'fallback' needs the agent's {FALLBACK_FEATURE!r} feature; pipelines {cfg.pipelines} record {features}")
    l2, l2_scores = choose_l2(groups, sample_ids, features, nil_features, cfg)
    head = DecisionHead.fit(groups, features, nil_features, l2=l2, fingerprint=fingerprint, prior=_prior(cfg))
    head.feature_definition = feature_definition_of(records, cfg.pipelines)
    if answered:  # the reasoner earns the weight its answers earn on these links, 0 included
        head.fit_reasoner_weight(
            [g for g, _ in answered],
            [f["reasoner"] for _, f in answered],
            [f["ids"] for _, f in answered],
            [[k for k in f["reasoner"] if k != NIL] for _, f in answered],
        )
    by_attack = Counter(r["attack"] for r in records if r.get("pipeline") in cfg.pipelines)
    by_dataset = Counter(s.split(":", 1)[0] for s in sample_ids)
    head.metrics = {
        "dataset": ",".join(e.dataset.key for e in ecfgs),
        "split": ",".join(dict.fromkeys(str(e.dataset.split) for e in ecfgs)),
        "scope": cfg.scope,
        "pipelines": cfg.pipelines,
        "links": len(groups),
        "samples": len(set(sample_ids)),
        "by_dataset": dict(by_dataset),
        "by_condition": dict(by_attack),
        **({"cot_links": sum(
            1 for r in records if r.get("pipeline") in cfg.pipelines and str(r.get("setting", "")).endswith(COT_SUFFIX)
        )} if cfg.cot_augment is not None else {}),
        "left_out": dict(skipped),
        "reasoner_links": len(answered),
        "reasoner_weight": head.reasoner_weight,
        "in_sample": head.evaluate(groups),
        "l2": l2,
        "prior": cfg.prior,
        **({"l2_selection": l2_scores} if l2_scores else {}),
        "cross_validated": cross_validate(groups, sample_ids, features, nil_features, l2, cfg.folds, prior=_prior(cfg)),
        "eval_fingerprint": ",".join(e.fingerprint() for e in ecfgs),
    }
    path = cfg.out or default_head_path(kbs[0][0], cfg.name)
    head.save(path)
    return path, head
