"""`retlink train CONFIG`: fit the decision head on a dataset's dev (or train) split.

The links come from the one evaluation runner (`retlink.eval.runner`), so training data is made
exactly as evaluation data is: the same pipelines, stored attacked images (PGD, the adaptive
EOT-through-purification attack, ...), the `augment` attack for MAT-style one-to-many image
augmentation and text perturbation settings (word dropout) for the text side, resumable runs.
The runner writes each link's candidate-pool features into its record (`record_features`);
this module turns those records into training groups and fits `DecisionHead`.

The head's dev metrics are cross-validated by sample (every attacked or augmented copy of a
sample sits in the same fold), so they are not in-sample numbers.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from retlink.agent.decision import DecisionHead, Group, kb_fingerprint
from retlink.core.config import StrictModel, read_yaml, validate_config
from retlink.core.errors import ConfigError, DatasetError
from retlink.core.types import NIL

log = logging.getLogger(__name__)



class TrainConfig(StrictModel):
    """What `retlink train` reads."""

    #: the head's name (its default file is `<kb path>.<name>.head.json`, beside the KB)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    #: an eval runner config (YAML path, relative to this file, or inline mapping) over the
    #: split to fit on; `record_features` is switched on for it
    eval: Any
    #: which of its pipelines' links to fit on (`agent` pipelines; several, e.g. with and
    #: without purification, so the head learns how each defence changes the signals)
    pipelines: list[str] = Field(min_length=1)
    l2: float = Field(1e-2, ge=0)
    folds: int = Field(5, ge=2, le=20)
    out: Path | None = None


def load_train_config(source: str | Path | dict[str, Any]) -> tuple[TrainConfig, Any]:
    """The train config and its eval config (validated completely before anything runs)."""
    from retlink.eval.config import EvalConfig, load_eval_config

    if isinstance(source, dict):
        data, base, origin = source, Path.cwd(), "dict"
    else:
        # the one config reader: `out` and an `eval` file path resolve like every config path
        path = Path(source)
        data, base, origin = read_yaml(path, {"out", "eval"}), path.parent, str(path)
    cfg = validate_config(TrainConfig, data, origin)
    ev = cfg.eval
    if isinstance(ev, dict) and not isinstance(source, dict):
        # an inline eval config's paths are relative to the train config's file, as in a file
        from retlink.eval.config import relative_to_file

        ev = relative_to_file(ev, base)
    if isinstance(ev, str | Path | dict):
        ecfg = load_eval_config(ev)
    else:
        raise ConfigError(f"invalid configuration ({origin}):\n  eval: a path or a mapping")
    ecfg = EvalConfig.model_validate({**ecfg.model_dump(), "record_features": True})
    kinds = {p.name: p.kind for p in ecfg.pipelines}
    for name in cfg.pipelines:
        if name not in kinds:
            raise ConfigError(f"invalid configuration ({origin}):\n  pipelines: no pipeline named {name!r} in eval")
        if kinds[name] != "agent":
            raise ConfigError(f"invalid configuration ({origin}):\n  pipelines: {name!r} is a {kinds[name]}, not an agent")
    if ecfg.dataset.split is None:
        raise ConfigError(f"invalid configuration ({origin}):\n  eval.dataset.split: name the split to fit on (dev or train)")
    return cfg, ecfg


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


def cross_validate(
    groups: list[Group], sample_ids: list[str], features: list[str], nil_features: list[str], l2: float, folds: int
) -> dict[str, float]:
    """Held-out metrics over `folds` folds split by sample id."""
    fold_of = [zlib.crc32(s.encode()) % folds for s in sample_ids]
    held: list[Group] = []
    preds: list[dict[str, float]] = []
    for k in range(folds):
        train = [g for g, f in zip(groups, fold_of, strict=True) if f != k]
        test = [g for g, f in zip(groups, fold_of, strict=True) if f == k]
        if not train or not test:
            continue
        head = DecisionHead.fit(train, features, nil_features, l2=l2)
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


def train(source: str | Path | dict[str, Any], *, limit: int | None = None) -> tuple[Path, DecisionHead]:
    """Run the eval config's links (resuming), fit the head on them and write it."""
    from retlink.agent.decision.features import FEATURES, NIL_FEATURES
    from retlink.eval.runner import Runner
    from retlink.eval.runs import RESULTS, read_records

    cfg, ecfg = load_train_config(source)
    runner = Runner(ecfg)
    if not runner.samples(limit=1):
        raise DatasetError(
            f"dataset {ecfg.dataset.key!r} has no samples in split {ecfg.dataset.split!r}; "
            "the head is fitted on a dev or train split, never on the test split it is reported on"
        )
    runner.run(limit)
    records = list(read_records(runner.dir / RESULTS).values())
    answered: list[tuple[Group, dict[str, Any]]] = []
    groups, sample_ids, skipped = groups_from_records(records, cfg.pipelines, answered)
    if not groups:
        raise DatasetError(f"no usable links of pipelines {cfg.pipelines} in {runner.dir} ({dict(skipped)})")
    fingerprint = kb_fingerprint(runner.kb().manifest)
    head = DecisionHead.fit(groups, list(FEATURES), list(NIL_FEATURES), l2=cfg.l2, fingerprint=fingerprint)
    if answered:  # the reasoner earns the weight its answers earn on these links, 0 included
        head.fit_reasoner_weight(
            [g for g, _ in answered],
            [f["reasoner"] for _, f in answered],
            [f["ids"] for _, f in answered],
            [[k for k in f["reasoner"] if k != NIL] for _, f in answered],
        )
    by_attack = Counter(r["attack"] for r in records if r.get("pipeline") in cfg.pipelines)
    head.metrics = {
        "dataset": ecfg.dataset.key,
        "split": ecfg.dataset.split,
        "pipelines": cfg.pipelines,
        "links": len(groups),
        "samples": len(set(sample_ids)),
        "by_condition": dict(by_attack),
        "left_out": dict(skipped),
        "reasoner_links": len(answered),
        "reasoner_weight": head.reasoner_weight,
        "in_sample": head.evaluate(groups),
        "cross_validated": cross_validate(groups, sample_ids, list(FEATURES), list(NIL_FEATURES), cfg.l2, cfg.folds),
        "eval_fingerprint": ecfg.fingerprint(),
    }
    path = cfg.out or default_head_path(ecfg.kb.path, cfg.name)
    head.save(path)
    return path, head
