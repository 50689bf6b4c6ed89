"""A decision-level adaptive attack on an agent pipeline that decides with a head (issue 29).

The eval runner's image attacks aim at an embedding (away from the gold entity's KB image, toward
a chosen wrong one): that is what breaks retrieval, but an agent whose decision head also weighs
the text, the alias table and the caption may not care where the embedding goes. This attack
aims at the decision itself. For one link, the head's candidate logits are recomputed from the
query's embedding, differentiably, with the pipeline's own network and weights:

- the image columns (`image`, `image_gap`, `image_gap_x_purified`, `image_gap_x_detector`) are the
  cosine of the query embedding with each candidate's KB image vectors (the pipeline's KB, so
  the tuned weights' space for a tuned embedder), and `fused_gap` the pipeline's fused score
  (`fused_similarity` with its KB weights and alias bonus) minus the pool's best;
- the text, alias and `has_image` columns do not depend on the image; `image_rank` (piecewise
  constant) and the caption columns (the captioner's words, not differentiable) keep their
  clean values in the copy, while the real pipeline recomputes them on every attacked image.

The loss is the best wrong option's logit (NIL included) minus the gold entity's; PGD with EOT
through the pipeline's purifier (BPDA for its non-differentiable steps, the loss averaged over
jittered draws, as `pgd_eot` does) raises it. Each attacked image is then linked by the real
pipeline, so a sample counts as broken only when the agent itself answers wrong. Candidates that
image retrieval would add under attack are not in the copy's pool: the copy attacks the clean
pool's decision, the real pipeline judges with whatever pool it retrieves.

    python -m retlink.eval.experiments.agent_attack src/retlink/eval/configs/defences/logos-robust-encoders-rival.yaml \\
        --pipeline mat-head-purify -n 100 --eps 2/255 8/255 --run runs/logos-robust-encoders-rival --out adaptive.json

With `--run` (any number of eval runs of the same samples), those runs' attacks at the same eps
join the worst case: a sample is right only if its clean answer was and no attack broke it.
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
from retlink.core.types import PoolFeatures

log = logging.getLogger(__name__)

#: the head's columns recomputed from the query embedding (the others keep their clean values)
IMAGE_COLUMNS = ("image", "image_gap", "image_gap_x_detector", "image_gap_x_purified", "fused_gap")


class HeadMarginTarget(Target):
    """One link's decision as a function of the (purified) query pixels: loss = the best wrong
    option's logit minus the gold entity's, adversarial once it is positive."""

    def __init__(
        self,
        model: nn.Module,
        head: Any,
        features: PoolFeatures,
        vectors: list[np.ndarray | None],
        gold: int,
        *,
        fusion: tuple[float, float, float],
        detector_score: float = 0.0,
        purified: bool = True,
    ) -> None:
        super().__init__(model)
        names = list(features.names)
        self.col = {n: names.index(n) for n in names}
        self.rows = torch.tensor(features.rows, dtype=torch.float64).reshape(len(features.ids), len(names))
        self.idx = [names.index(n) for n in head.features]
        self.mean = torch.as_tensor(np.asarray(head.mean), dtype=torch.float64)
        self.scale = torch.as_tensor(np.asarray(head.scale), dtype=torch.float64)
        self.weights = torch.as_tensor(np.asarray(head.weights), dtype=torch.float64)
        self.nil = head.nil_bias + float(np.asarray(features.nil, dtype=np.float64) @ np.asarray(head.nil_weights))
        self.vectors = [
            None if v is None else torch.as_tensor(np.asarray(v), dtype=torch.float64).reshape(-1, np.shape(v)[-1])
            for v in vectors
        ]
        self.gold = gold
        self.text_weight, self.image_weight, self.alias_bonus = fusion
        self.detector_score, self.purified = float(detector_score), float(purified)

    def rows_for(self, embedding: torch.Tensor) -> torch.Tensor:
        """(candidates, features) with the image columns recomputed from one unit embedding."""
        has = [v is not None for v in self.vectors]
        image = torch.stack(
            [(v @ embedding).max() if v is not None else embedding.new_zeros(()) for v in self.vectors]
        )
        mask = torch.tensor(has)
        best_image = image[mask].max() if mask.any() else image.new_zeros(())
        image_gap = torch.where(mask, image - best_image, torch.zeros_like(image))
        text = self.rows[:, self.col["mention"]]
        alias = self.rows[:, self.col["alias"]]
        tw, iw = self.text_weight, self.image_weight
        mixed = (tw * text + iw * image) / (tw + iw) if tw + iw > 0 else text
        fused = torch.where(mask & torch.tensor(iw > 0), mixed, text) + self.alias_bonus * alias
        new = {
            "image": torch.where(mask, image, torch.zeros_like(image)),
            "image_gap": image_gap,
            "image_gap_x_detector": image_gap * self.detector_score,
            "image_gap_x_purified": image_gap * self.purified,
            "fused_gap": fused - fused.max(),
        }
        cols = [new.get(name, self.rows[:, k]) for name, k in self.col.items()]
        return torch.stack(cols, dim=1)

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """The head's candidate logits and NIL's (last), as `DecisionHead.logits` computes them."""
        cand = ((self.rows_for(embedding)[:, self.idx] - self.mean) / self.scale) @ self.weights
        return torch.cat([cand, cand.new_tensor([self.nil])])

    def loss_and_success(self, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = F.normalize(self.model.features(x).double(), dim=-1)
        losses = []
        for e in embeddings:
            z = self.logits(e)
            others = torch.cat([z[: self.gold], z[self.gold + 1 :]])
            losses.append(others.max() - z[self.gold])
        loss = torch.stack(losses).float()
        return loss, loss > 0


def _agent_parts(linker: Any) -> tuple[Any, Any, Any, tuple[float, float, float], list[dict[str, Any]]]:
    """(image network, KB, head, fused-score weights, purification steps) of an agent `Linker`."""
    comps = linker.components
    if comps.head is None:
        raise ValueError("the pipeline has no decision head: there is no head decision to attack")
    if comps.image_embedder is None or not hasattr(comps.image_embedder, "model"):
        raise ValueError("the pipeline has no EfficientNet image embedder to differentiate through")
    cfg = linker.config
    fusion = (cfg.kb.text_weight, cfg.kb.image_weight, cfg.kb.alias_bonus)
    purify = [s.model_dump() for s in cfg.defence.purify]
    return comps.image_embedder.model, comps.kb, comps.head, fusion, purify


def _link_signals(features: PoolFeatures) -> tuple[float, bool]:
    """The link-level signals the features were computed with (the detector's score, whether
    the image was purified), read back from their interactions with `image_gap`."""
    names = list(features.names)
    rows = np.asarray(features.rows, dtype=np.float64).reshape(len(features.ids), len(names))
    gap = rows[:, names.index("image_gap")]
    i = int(np.argmax(np.abs(gap)))
    if abs(gap[i]) < 1e-3:  # every gap 0: the interactions are 0 whatever the signals
        return 0.0, False
    detector = rows[i, names.index("image_gap_x_detector")] / gap[i]
    purified = rows[i, names.index("image_gap_x_purified")] / gap[i]
    return float(detector), bool(round(purified))


def merge_outcomes(runs: Sequence[dict[str, dict[str, bool]]]) -> dict[str, dict[str, bool]]:
    """Several runs' `run_outcomes` as one: right at a budget only where every run's attacks
    at that budget left the sample right."""
    merged: dict[str, dict[str, bool]] = {}
    for run in runs:
        for sid, held in run.items():
            mine = merged.setdefault(sid, {})
            for label, ok in held.items():
                mine[label] = mine.get(label, True) and ok
    return merged


def attack_sample(
    linker: Any, sample: Any, budgets: Sequence[float], *, steps: int, draws: int, seed: int = 0
) -> dict[str, Any]:
    """The clean answer, then per budget the decision-level PGD-EOT and the real pipeline's
    answer on the attacked image (`attacks[label]`: that answer when it is wrong, else None).
    `rival_lead`: the copy's best wrong logit minus the gold one, clean and after each attack
    (through the deployed purifier): how far the attack got where it did not flip the answer."""
    from retlink.attacks import build_attack
    from retlink.attacks.adaptive import RandomPurifier, parse_steps
    from retlink.attacks.attacked import clean_tensor
    from retlink.attacks.spec import fraction_text

    model, kb, head, fusion, purify = _agent_parts(linker)
    x = clean_tensor(sample.image_path, 224)
    result = linker.link(x, sample.mention, sample.context)
    row: dict[str, Any] = {"sample_id": sample.id, "gold": sample.gold_id, "clean": result.entity_id == sample.gold_id}
    row["attacks"] = {}
    features = result.features
    if not row["clean"] or features is None or sample.gold_id not in features.ids:
        return row
    vectors = kb.image_vectors(features.ids)
    detector_score, purified = _link_signals(features)
    scale = linker.config.kb.image_weight_when_perturbed if result.perturbed else 1.0
    target = HeadMarginTarget(
        model,
        head,
        features,
        [vectors.get(i) for i in features.ids],
        features.ids.index(sample.gold_id),
        fusion=(fusion[0], fusion[1] * scale, fusion[2]),
        detector_score=detector_score,
        purified=purified,
    )
    deployed = RandomPurifier(parse_steps(purify), jitter=False) if purify else nn.Identity()

    def copy_margin(image: torch.Tensor) -> float:
        """The copy's loss on one image through the deployed purifier (> 0: a rival leads)."""
        with torch.no_grad():
            return round(float(target.loss(deployed(image[None]), None)[0]), 4)

    with torch.no_grad():  # the copy must see what the pipeline saw (its purifier, no jitter)
        seen = deployed(x[None])
        copy = target.rows_for(F.normalize(model.features(seen).double(), dim=-1)[0]).numpy()
    gap = float(np.abs(copy - np.asarray(features.rows)).max())
    row["rival_lead"] = {"clean": copy_margin(x)}
    row["feature_gap"] = round(gap, 4)
    if gap > 0.02:  # the attack would aim at other features than the pipeline's: say so
        log.warning("%s: the differentiable features differ from the pipeline's by %.4f", sample.id, gap)
    for eps in budgets:
        attack = build_attack(
            "pgd_eot", target, "normal",
            eps=eps, alpha=max(eps / 4, 0.5 / 255), steps=steps, purify=purify, eot_samples=draws, seed=seed,
        )  # fmt: skip
        adv = attack(x[None], None)[0]
        row["rival_lead"][fraction_text(eps)] = copy_margin(adv)
        got = linker.link(adv, sample.mention, sample.context).entity_id
        row["attacks"][fraction_text(eps)] = None if got == sample.gold_id else got
    return row


def summarise(
    rows: list[dict[str, Any]], budgets: Sequence[float], run_attacks: dict[str, dict[str, bool]] | None
) -> dict[str, Any]:
    """Shares with bootstrap CIs: clean, under this attack, and the worst case with the runs'."""
    from retlink.attacks.spec import fraction_text
    from retlink.eval.experiments.certified_attack import share

    out: dict[str, Any] = {"n": len(rows), "clean": share([r["clean"] for r in rows]), "budgets": {}}
    for b in budgets:
        label = fraction_text(b)
        held = [r["clean"] and r["attacks"].get(label) is None for r in rows]
        entry = {"decision_attack": share(held)}
        if run_attacks is not None:
            worst = [h and run_attacks.get(r["sample_id"], {}).get(label, True) for h, r in zip(held, rows, strict=True)]
            entry["worst_case"] = share(worst)
        out["budgets"][label] = entry
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic import TypeAdapter

    from retlink.attacks.spec import Budget
    from retlink.eval.config import load_eval_config
    from retlink.eval.experiments.certified_attack import run_outcomes
    from retlink.eval.pipelines import build_pipeline
    from retlink.eval.runs import pct_ci

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="an eval config with an agent pipeline that has a decision head")
    parser.add_argument("--pipeline", required=True, help="the agent pipeline's name in the config")
    parser.add_argument("-n", "--limit", type=int, default=None, help="the first N samples of the config's split")
    parser.add_argument("--eps", nargs="+", default=["2/255", "8/255"], help="L-inf budgets")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--draws", type=int, default=2, help="purifier draws averaged per step (EOT)")
    parser.add_argument("--after", type=Path, default=None, help="an earlier --out of this experiment: keep its rows, attack the rest")
    parser.add_argument("--run", type=Path, action="append", default=[], help="an eval run whose attacks join the worst case")
    parser.add_argument("--out", type=Path, default=None, help="write the per-sample rows and the summary here (JSON)")
    args = parser.parse_args(argv)
    budgets = [TypeAdapter(Budget).validate_python(e) for e in args.eps]
    cfg = load_eval_config(args.config)
    spec = next((p for p in cfg.pipelines if p.name == args.pipeline), None)
    if spec is None or spec.kind != "agent":
        parser.error(f"{args.config} has no agent pipeline named {args.pipeline!r}")
    linker = build_pipeline(spec, cfg.kb_path_of(spec))
    samples = cfg.samples(args.limit)
    before = {r["sample_id"]: r for r in json.loads(args.after.read_text())["rows"]} if args.after else {}
    rows = [
        before.get(s.id) or attack_sample(linker, s, budgets, steps=args.steps, draws=args.draws, seed=cfg.seed)
        for s in track(samples, description="decision-level attack")
    ]
    run_attacks = merge_outcomes([run_outcomes(r, args.pipeline, budgets) for r in args.run]) if args.run else None
    summary = summarise(rows, budgets, run_attacks)
    table = Table(title=f"{args.pipeline}: {summary['n']} samples of {cfg.dataset.key} {cfg.dataset.split}")
    for col in ("eps", "clean", "decision-level PGD-EOT", *(["worst case"] if run_attacks is not None else [])):
        table.add_column(col)
    for label, e in summary["budgets"].items():
        cells = [pct_ci(summary["clean"]["value"], summary["clean"]["ci"]), pct_ci(e["decision_attack"]["value"], e["decision_attack"]["ci"])]
        if run_attacks is not None:
            cells.append(pct_ci(e["worst_case"]["value"], e["worst_case"]["ci"]))
        table.add_row(label, *cells)
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
