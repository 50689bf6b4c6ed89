"""An adaptive attack on the certified pipeline's own decision, and a check of its certificates.

The `certified` pipeline's certificates are proofs, but a proof is only as good as its code: this
experiment attacks the pipeline the way an attacker who knows everything would, and counts what
it breaks. The pipeline's image-dependent features (the pooled thumbnail, the template match and,
with `deep`, the image embedder's similarity: the pipeline's own network and weights) are
recomputed differentiably from the query pixels; the heads' logits follow (the exact features and
the candidate set do not depend on the image). PGD on the pixels within an L-inf ball then aims at
each way the answer can be made wrong:

- *through the deep head*: close the cascade's gate (the exact head's top margin below
  `gate_margin`; with `gate_radius`, the right answer's worst-case margins at that radius below
  zero) while pushing the deep head's margin for the right answer below zero;
- *through the exact head*: make a rival lead the exact head by more than the gate (with
  `gate_radius`: by more than the rival's worst-case loss at that radius), so the gate opens on
  a wrong answer (for a pipeline with one head: make any rival lead it).

For a radius gate the worst-case losses are those of the clean image (`gate_falls`); on the
thumbnail they do not depend on the image, on the templates they move little.

Every attacked image is then linked by the real pipeline (not the differentiable copy), so a
sample counts as broken only when the pipeline itself answers wrong. An answer the pipeline
certified at that eps and an attack broke is a bug in the bound, and is reported as such.

    python -m retlink.eval.experiments.certified_attack src/retlink/eval/configs/defences/certified-head.yaml \\
        --pipeline certified-cascade -n 100 --eps 2/255 8/255 [--run runs/certified-head]

With `--run`, the eval run's attacks at the same eps (PGD on the image embedder) join in: the
worst case counts a sample right only if the clean answer was right and no attack broke it.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import track
from rich.table import Table
from torch import nn

from retlink.attacks.targets import Target
from retlink.core.types import NIL, PoolFeatures

log = logging.getLogger(__name__)


class DifferentiableHeads:
    """A certified pipeline's heads on one link, as functions of the query pixels."""

    def __init__(self, linker: Any, features: PoolFeatures) -> None:
        from retlink.eval.certified import DEEP_FEATURE, TEMPLATE_FEATURE, THUMB_FEATURE

        self.linker = linker
        self.names = list(features.names)
        self.rows = torch.tensor(features.rows, dtype=torch.float64).reshape(
            len(features.ids), len(self.names)
        )
        self.nil = np.asarray(features.nil, dtype=np.float64)
        entities = linker.kb.get(features.ids)
        self.thumbs = [linker.thumbs.get(e) for e in entities]
        self.templates = [
            [t.double() for t in (linker.templates.get(e) or [])] if b is not None else []
            for e, b in zip(entities, self.thumbs, strict=True)
        ]
        deep = DEEP_FEATURE in self.names
        vectors = linker.kb.image_vectors(features.ids) if deep else {}
        self.vectors = [
            torch.as_tensor(np.asarray(vectors[i]), dtype=torch.float64).reshape(-1, np.shape(vectors[i])[-1])
            if deep and i in vectors and b is not None
            else None
            for i, b in zip(features.ids, self.thumbs, strict=True)
        ]
        self.cols = {THUMB_FEATURE: "thumb", TEMPLATE_FEATURE: "template", DEEP_FEATURE: "deep"}

    def feature_rows(self, x: torch.Tensor, deep: bool = True) -> torch.Tensor:
        """(candidates, features): the clean exact columns, the image columns recomputed from x
        (without `deep`, the deep column stays clean: for the exact head, which does not read it)."""
        from retlink.tools.vision.certified import thumbnail
        from retlink.tools.vision.templates import peaks, query_map

        size = self.linker.config.size
        thumb = thumbnail(x, size).double()
        qmap = query_map(x).double()
        embedding = None
        if deep and any(v is not None for v in self.vectors):
            model = self.linker.kb.image_embedder.model
            embedding = F.normalize(model.features(x[None]).double(), dim=-1)[0]
        cols = []
        for k, name in enumerate(self.names):
            kind = self.cols.get(name)
            col = list(self.rows[:, k].unbind())
            for i in range(len(col)):
                if self.thumbs[i] is None:
                    continue
                if kind == "thumb":
                    col[i] = -((thumb - torch.as_tensor(self.thumbs[i])) ** 2).mean()
                elif kind == "template" and self.templates[i]:
                    p = peaks(qmap, self.templates[i])
                    col[i] = p.max() if p.numel() else col[i]
                elif kind == "deep" and self.vectors[i] is not None and embedding is not None:
                    col[i] = (self.vectors[i] @ embedding).max()
            cols.append(torch.stack(col))
        return torch.stack(cols, dim=1)

    def logits(self, head: Any, rows: torch.Tensor) -> torch.Tensor:
        """The head's candidate logits and NIL's (last), as `DecisionHead.logits` computes them."""
        idx = [self.names.index(n) for n in head.features]
        mean = torch.as_tensor(np.asarray(head.mean), dtype=torch.float64)
        scale = torch.as_tensor(np.asarray(head.scale), dtype=torch.float64)
        weights = torch.as_tensor(np.asarray(head.weights), dtype=torch.float64)
        cand = ((rows[:, idx] - mean) / scale) @ weights
        nil = head.nil_bias + float(self.nil @ np.asarray(head.nil_weights, dtype=np.float64))
        return torch.cat([cand, cand.new_tensor([nil])])


def _margin(z: torch.Tensor, index: int) -> torch.Tensor:
    """Logit of option `index` minus the best other option's."""
    others = torch.cat([z[:index], z[index + 1 :]])
    return z[index] - others.max()


def _top_margin(z: torch.Tensor) -> torch.Tensor:
    top = torch.topk(z, 2).values
    return top[0] - top[1]


def objectives(
    linker: Any, heads: DifferentiableHeads, gold: int, falls: np.ndarray | None = None
) -> dict[str, Any]:
    """Per way of being wrong, a loss of the pixels the attack raises (higher: closer to wrong).
    `falls`: a radius gate's worst-case losses of the right answer's exact margins (`gate_falls`)."""
    kappa = 0.1
    if linker.exact_head is not None and falls is not None:
        loss = torch.as_tensor(falls, dtype=torch.float64)
        others = torch.ones(len(falls), dtype=torch.bool)
        others[gold] = False

        def radius_closed(z: torch.Tensor) -> torch.Tensor:
            return F.relu((z[gold] - z + loss)[others].min() + kappa)

        def through_deep_r(x: torch.Tensor) -> torch.Tensor:
            rows = heads.feature_rows(x)
            closed = radius_closed(heads.logits(linker.exact_head, rows))
            flipped = F.relu(_margin(heads.logits(linker.head, rows), gold) + kappa)
            return -(closed + flipped)

        def through_exact_r(x: torch.Tensor) -> torch.Tensor:
            z = heads.logits(linker.exact_head, heads.feature_rows(x, deep=False))
            return -F.relu(z[gold] - (z + loss)[others].max() + kappa)

        return {"through deep head": through_deep_r, "through exact head": through_exact_r}
    gate = linker.config.gate_margin
    out: dict[str, Any] = {}
    if linker.exact_head is not None and gate is not None:

        def through_deep(x: torch.Tensor) -> torch.Tensor:
            rows = heads.feature_rows(x)
            closed = F.relu(_top_margin(heads.logits(linker.exact_head, rows)) - gate + kappa)
            flipped = F.relu(_margin(heads.logits(linker.head, rows), gold) + kappa)
            return -(closed + flipped)

        def through_exact(x: torch.Tensor) -> torch.Tensor:
            rows = heads.feature_rows(x, deep=False)
            return -F.relu(_margin(heads.logits(linker.exact_head, rows), gold) + gate + kappa)

        out["through deep head"] = through_deep
        out["through exact head"] = through_exact
    else:

        def through_head(x: torch.Tensor) -> torch.Tensor:
            return -F.relu(_margin(heads.logits(linker.head, heads.feature_rows(x)), gold) + kappa)

        out["through the head"] = through_head
    return out


class ObjectiveTarget(Target):
    """One link's attack objective as a `Target`, so the attack library's PGD runs it: the loss
    of a single image, adversarial once every hinge in it is satisfied (loss >= 0)."""

    def __init__(self, objective: Any, model: nn.Module) -> None:
        super().__init__(model)
        self.objective = objective

    def loss_and_success(self, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        loss = torch.stack([self.objective(image) for image in x]).float()
        return loss, loss >= 0


#: the attack library's attacks an objective is run with, in order (a later one only where the
#: earlier ones did not break the answer)
ATTACKS = ("pgd", "apgd")


def run_attack(
    kind: str, objective: Any, model: nn.Module, clean: torch.Tensor, eps: float, steps: int
) -> torch.Tensor:
    """One of the attack library's attacks on one objective, from the clean image: PGD without
    a random start (the objective's hinges start from the clean margins), step 2.5 eps / steps;
    APGD (Croce and Hein, 2020) with its own step-size schedule, on the objective's loss."""
    from retlink.attacks.apgd import APGD
    from retlink.attacks.pgd import PGD

    target = ObjectiveTarget(objective, model)
    if kind == "pgd":
        return PGD(target, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=False)(clean)
    if kind == "apgd":
        return APGD(target, eps=eps, steps=steps, loss=None)(clean)
    raise ValueError(f"unknown attack {kind!r}; known: {', '.join(ATTACKS)}")


def attack_sample(
    linker: Any,
    sample: Any,
    budgets: Sequence[float],
    steps: int,
    attacks: Sequence[str] = ("pgd",),
    *,
    skip_certified: bool = False,
    before: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Clean answer and certificates of one sample, then the adaptive attacks at each budget:
    each objective by each attack in turn, until one breaks the answer (`attacks[label]` names
    it: "objective, attack"; None: none did). `skip_certified` leaves answers certified at a
    budget unattacked there (the proof covers them; the check of the proof is then not made);
    `before`, an earlier row of this sample, keeps its breaks and attacks only where it held."""
    from retlink.attacks.attacked import clean_tensor
    from retlink.attacks.spec import fraction_text

    x = clean_tensor(sample.image_path, 224)
    result = linker.link(x, sample.mention, sample.context)
    detail = result.trace[-1].detail
    answer = result.candidates[0].entity.id if result.candidates else NIL
    row: dict[str, Any] = {
        "sample_id": sample.id,
        "gold": sample.gold_id,
        "clean": answer == sample.gold_id,
        "attacks": {},
    }
    row["certified"] = {fraction_text(e): bool(detail["certified"].get(fraction_text(e))) for e in budgets}
    features = result.features
    if not row["clean"] or features is None or sample.gold_id not in features.ids:
        return row
    heads = DifferentiableHeads(linker, features)
    with torch.no_grad():
        gap = float(np.abs(heads.feature_rows(x).numpy() - np.asarray(features.rows)).max())
    if gap > 1e-3:  # the attack would aim at other features than the pipeline's: say so
        log.warning("%s: the differentiable features differ from the pipeline's by %.4f", sample.id, gap)
    gold = features.ids.index(sample.gold_id)
    falls = (
        linker.gate_falls(x, features, sample.gold_id)
        if linker.exact_head is not None and linker.config.gate_radius is not None
        else None
    )
    # the network the deep feature runs (frozen by the attack); a bare module without one
    embedder = getattr(linker.kb, "image_embedder", None)
    model = embedder.model if embedder is not None else nn.Identity()
    for eps in budgets:
        label = fraction_text(eps)
        broken_by = (before or {}).get("attacks", {}).get(label)
        if broken_by is not None or (skip_certified and row["certified"][label]):
            row["attacks"][label] = broken_by
            continue
        tries = [
            (kind, name, loss) for kind in attacks for name, loss in objectives(linker, heads, gold, falls).items()
        ]
        for kind, name, loss in tries:
            adv = run_attack(kind, loss, model, x, eps, steps)
            attacked = linker.link(adv, sample.mention, sample.context)
            got = attacked.candidates[0].entity.id if attacked.candidates else NIL
            if got != sample.gold_id:
                broken_by = f"{name}, {kind}"
                break
        row["attacks"][label] = broken_by
    return row


def run_outcomes(run: Path, pipeline: str, budgets: Sequence[float]) -> dict[str, dict[str, bool]]:
    """sample id -> eps label -> whether every attack of the eval run at that eps left it right."""
    from retlink.attacks.spec import fraction_text
    from retlink.eval.runs import RESULTS, read_meta, read_records

    meta = read_meta(run)
    eps_of = {a["name"]: a.get("params", {}).get("eps") for a in meta.get("config", {}).get("attacks", [])}
    out: dict[str, dict[str, bool]] = {}
    for rec in read_records(run / RESULTS).values():
        if rec["pipeline"] != pipeline or rec["attack"] == "clean" or rec.get("status") != "ok":
            continue
        eps = eps_of.get(rec["attack"])
        if eps is None:
            continue
        for b in budgets:
            if abs(float(eps) - b) < 1e-9:
                held = out.setdefault(rec["sample_id"], {}).setdefault(fraction_text(b), True)
                out[rec["sample_id"]][fraction_text(b)] = held and bool(rec["correct"])
    return out


def share(values: list[bool]) -> dict[str, Any]:
    """The share of True with its bootstrap CI (None for no values)."""
    from retlink.eval.runs import bootstrap_ci

    arr = np.asarray(values, dtype=float)
    return {
        "value": float(arr.mean()) if len(arr) else None,
        "ci": list(bootstrap_ci(arr)) if len(arr) else None,
    }


def summarise(
    rows: list[dict[str, Any]], budgets: Sequence[float], run_attacks: dict[str, dict[str, bool]] | None
) -> dict[str, Any]:
    """Shares with bootstrap CIs: clean, certified, under the adaptive attack, worst case."""
    from retlink.attacks.spec import fraction_text

    out: dict[str, Any] = {"n": len(rows), "clean": share([r["clean"] for r in rows]), "budgets": {}}
    for b in budgets:
        label = fraction_text(b)
        adaptive = [r["clean"] and r["attacks"].get(label) is None for r in rows]
        certified = [r["clean"] and r["certified"][label] for r in rows]
        bugs = [
            r["sample_id"] for r in rows if r["clean"] and r["certified"][label] and r["attacks"].get(label)
        ]
        entry = {"certified": share(certified), "adaptive": share(adaptive), "certified_but_broken": bugs}
        if run_attacks is not None:
            worst = [
                a and run_attacks.get(r["sample_id"], {}).get(label, True)
                for a, r in zip(adaptive, rows, strict=True)
            ]
            entry["worst_case"] = share(worst)
        out["budgets"][label] = entry
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic import TypeAdapter

    from retlink.attacks.spec import Budget
    from retlink.eval.config import load_eval_config
    from retlink.eval.pipelines import build_pipeline
    from retlink.eval.runs import pct_ci

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="an eval config with a `certified` pipeline")
    parser.add_argument("--pipeline", required=True, help="the certified pipeline's name in the config")
    parser.add_argument(
        "-n", "--limit", type=int, default=None, help="the first N samples of the config's split"
    )
    parser.add_argument("--eps", nargs="+", default=["2/255", "8/255"], help="L-inf budgets")
    parser.add_argument("--steps", type=int, default=20, help="steps per objective and attack")
    parser.add_argument(
        "--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS, help="the attacks, in order"
    )
    parser.add_argument(
        "--skip-certified",
        action="store_true",
        help="do not attack answers certified at a budget (the proof covers them)",
    )
    parser.add_argument(
        "--after",
        type=Path,
        default=None,
        help="an earlier --out of this experiment: keep its breaks, attack the rest",
    )
    parser.add_argument(
        "--run",
        type=Path,
        default=None,
        help="an eval run of the same config whose attacks join the worst case",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="write the per-sample rows and the summary here (JSON)"
    )
    args = parser.parse_args(argv)
    budgets = [TypeAdapter(Budget).validate_python(e) for e in args.eps]
    cfg = load_eval_config(args.config)
    spec = next((p for p in cfg.pipelines if p.name == args.pipeline), None)
    if spec is None or spec.kind != "certified":
        parser.error(f"{args.config} has no certified pipeline named {args.pipeline!r}")
    linker = build_pipeline(spec, cfg.kb_path_of(spec))
    samples = cfg.samples(args.limit)
    before = {r["sample_id"]: r for r in json.loads(args.after.read_text())["rows"]} if args.after else {}
    rows = [
        attack_sample(
            linker,
            s,
            budgets,
            args.steps,
            args.attacks,
            skip_certified=args.skip_certified,
            before=before.get(s.id),
        )
        for s in track(samples, description="adaptive attack")
    ]
    run_attacks = run_outcomes(args.run, args.pipeline, budgets) if args.run else None
    summary = summarise(rows, budgets, run_attacks)
    table = Table(title=f"{args.pipeline}: {summary['n']} samples of {cfg.dataset.key} {cfg.dataset.split}")
    for col in (
        "eps",
        "clean",
        "certified",
        "adaptive attack",
        *(["worst case"] if run_attacks is not None else []),
        "certified but broken",
    ):
        table.add_column(col)
    for label, e in summary["budgets"].items():
        cells = [
            pct_ci(summary["clean"]["value"], summary["clean"]["ci"]),
            pct_ci(e["certified"]["value"], e["certified"]["ci"]),
        ]
        cells.append(pct_ci(e["adaptive"]["value"], e["adaptive"]["ci"]))
        if run_attacks is not None:
            cells.append(pct_ci(e["worst_case"]["value"], e["worst_case"]["ci"]))
        table.add_row(label, *cells, str(len(e["certified_but_broken"])))
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    bugs = sum(len(e["certified_but_broken"]) for e in summary["budgets"].values())
    if bugs:
        log.error("an attack broke %d certified answer(s): the bound is wrong", bugs)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
