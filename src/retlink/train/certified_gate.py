"""Choosing the certified cascade's `gate_margin` on dev links (issue 29, item 1).

The cascade (`certified` pipeline with `exact_head` and `gate_margin`) lets the head over exact
evidence (text, context words, aliases, the bounded thumbnail and template match) answer where
its logit margin exceeds the gate, with a certificate, and the head with the deep image similarity everywhere
else. A low gate certifies more links but hands the exact head links it gets wrong; a high one
keeps the deep head's clean accuracy and certifies little. One `retlink train` run of the deep
pipeline on a dev split records every feature both heads read (the exact head's are the deep
head's without the deep column), so the trade-off of every gate is computed from it at once:
both heads are refitted on sample folds (as `retlink train`'s cross-validation splits them) and
each link is answered by heads that never saw its sample.

    python -m retlink.train.certified_gate runs/logos-certified-train

Several runs (of disjoint splits: DEV and TRAIN, say) pool their links, as a train config with
a list of evals pools them for the heads:

    python -m retlink.train.certified_gate runs/logos-certified-train runs/logos-certified-trainsplit-links

The gate chosen is the lowest whose cascade is no less accurate on the clean dev links than the
deep head alone (`--max-loss` allows a loss, in points). The shares it prints are of clean links:
"exact answers" is where the gate opens, "right by exact" where it opens on a right answer (the
certified share, up to the image evidence's swing, which the pipeline's bound then checks per link).

`--radius` chooses a `gate_radius` instead (the exact head answers where its answer is certified
at that radius): each clean dev image is linked again by the pipeline with the exact head of the
folds that did not hold its sample, for that head's certified radius on it. A radius gate's
certificate at eps is the exact head's at eps + the radius, so the table also gives the share
certified at each eps of the run's pipeline (a lower bound: the pipeline also certifies where both
heads agree). The same rule picks the lowest radius.

    python -m retlink.train.certified_gate runs/logos-certified-train --radius --at 2

With `--at EPS` the radius is the one whose held-out cascade has the highest mean of clean accuracy
and certified share at EPS (1/255): a radius gate trades clean answers for certified ones, and
this weighs the two alike instead of capping the clean loss.

With `--keep EPS:SHARE` (repeatable) the radius is the one with the best held-out clean accuracy
among those whose certified share at each EPS (1/255) is at least SHARE of that clean accuracy: a
robustness floor per budget, clean answers first above it (the certified share is a lower bound
on the accuracy under any attack, so the floor holds for the worst case too).

    python -m retlink.train.certified_gate runs/logos-certified-train --radius --keep 2:0.85 --keep 8:0.6
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from retlink.agent.decision import DecisionHead, Group
from retlink.core.errors import ConfigError
from retlink.eval.certified import DEEP_FEATURE
from retlink.eval.runs import RESULTS, read_records

#: gates tried (logit margins)
GATES: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
#: radius gates tried (L-inf, in 1/255 units)
RADII_255: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
#: budgets the radius table gives certified shares at (1/255 units)
TABLE_EPS_255: tuple[float, ...] = (2.0, 4.0, 8.0)

#: (the exact head of the folds without the sample, sample id) -> (right, certified radius in 1/255)
ExactRadius = Callable[[DecisionHead, str], tuple[bool, float]]


@dataclass(frozen=True)
class HeldOut:
    """One clean dev link answered by heads fitted without its sample."""

    sample_id: str
    exact_right: bool
    exact_margin: float
    deep_right: bool
    #: the exact head's certified radius on the clean image, 1/255 units (when measured)
    exact_radius_255: float | None = None


def held_out_links(
    records: list[dict[str, Any]],
    pipeline: str,
    *,
    l2: float = 1e-2,
    folds: int = 5,
    condition: str = "clean",
    exact_radius: ExactRadius | None = None,
) -> list[HeldOut]:
    """Every link of `condition` answered by both heads fitted on the other folds (all conditions
    of the other samples: the heads see what `retlink train` gives them). With `exact_radius`,
    the pipeline links each one again with the held-out exact head, for its certified radius
    (and its answer: the pipeline's, not the recorded features')."""
    from retlink.train import groups_from_records, sample_folds

    recs = [r for r in records if r.get("pipeline") == pipeline and r.get("status") == "ok" and r.get("features")]
    if not recs:
        raise ConfigError(f"no recorded features of pipeline {pipeline!r} (a `retlink train` run of it?)")
    names = recs[0]["features"]["names"]
    if DEEP_FEATURE not in names:
        raise ConfigError(f"pipeline {pipeline!r} records no {DEEP_FEATURE!r} feature: give the run of the deep pipeline")
    nil_names = recs[0]["features"]["nil_names"]
    deep_col = names.index(DEEP_FEATURE)
    exact_names = [n for n in names if n != DEEP_FEATURE]
    groups, sample_ids, conditions = [], [], []
    for rec in recs:  # one at a time, to keep each usable link's condition beside it
        got, sids, _ = groups_from_records([rec], [pipeline])
        groups += got
        sample_ids += sids
        conditions += [rec["attack"]] * len(got)
    exact_groups = [Group(rows=np.delete(g.rows, deep_col, axis=1), nil=g.nil, gold=g.gold) for g in groups]
    fold_of = sample_folds(sample_ids, folds)
    out: list[HeldOut] = []
    for k in range(folds):
        train = [i for i, f in enumerate(fold_of) if f != k]
        test = [i for i, f in enumerate(fold_of) if f == k and conditions[i] == condition]
        if not train or not test:
            continue
        deep = DecisionHead.fit([groups[i] for i in train], names, nil_names, l2=l2)
        exact = DecisionHead.fit([exact_groups[i] for i in train], exact_names, nil_names, l2=l2)
        for i in test:
            e_answer, e_margin = exact.top_margin(exact_groups[i].rows, exact_groups[i].nil)
            d_answer, _ = deep.top_margin(groups[i].rows, groups[i].nil)
            right, radius = e_answer == groups[i].gold, None
            if exact_radius is not None:
                right, radius = exact_radius(exact, sample_ids[i])
            out.append(HeldOut(sample_ids[i], right, e_margin, d_answer == groups[i].gold, radius))
    if not out:
        raise ConfigError(f"no {condition!r} links of pipeline {pipeline!r} to hold out")
    return out


def gate_table(links: list[HeldOut], gates: tuple[float, ...] = GATES) -> list[dict[str, float]]:
    """Per gate: the cascade's accuracy, the share the exact head answers, and the share it
    answers right (in %, of the links)."""
    n = len(links)
    rows = []
    for gate in gates:
        opens = [x.exact_margin > gate for x in links]
        right = [x.exact_right if o else x.deep_right for x, o in zip(links, opens, strict=True)]
        rows.append({
            "gate": gate,
            "cascade": 100 * sum(right) / n,
            "exact_answers": 100 * sum(opens) / n,
            "right_by_exact": 100 * sum(o and x.exact_right for x, o in zip(links, opens, strict=True)) / n,
        })
    return rows


def radius_table(
    links: list[HeldOut], radii: tuple[float, ...] = RADII_255, eps: tuple[float, ...] = TABLE_EPS_255
) -> list[dict[str, float]]:
    """Per radius gate (1/255): the cascade's accuracy, the share the exact head answers, and
    the share certified at each of `eps` through the gate (right with a radius >= gate + eps)."""
    if any(x.exact_radius_255 is None for x in links):
        raise ConfigError("the links carry no exact-head radius: hold them out with exact_radius")
    n = len(links)
    rows = []
    for gate in radii:
        opens = [x.exact_radius_255 >= gate for x in links]  # type: ignore[operator]
        right = [x.exact_right if o else x.deep_right for x, o in zip(links, opens, strict=True)]
        row = {"gate": gate, "cascade": 100 * sum(right) / n, "exact_answers": 100 * sum(opens) / n}
        for e in eps:
            row[f"certified_{e:g}"] = 100 * sum(x.exact_right and x.exact_radius_255 >= gate + e for x in links) / n  # type: ignore[operator]
        rows.append(row)
    return rows


def choose_radius(
    links: list[HeldOut],
    max_loss: float = 0.0,
    radii: tuple[float, ...] = RADII_255,
    *,
    at: float | None = None,
    keep: dict[float, float] | None = None,
) -> float | None:
    """The lowest radius gate (1/255) whose cascade loses at most `max_loss` points to the deep
    head; with `at` (1/255), the one with the highest mean of clean accuracy and certified share
    at that budget (clean and robust weighed alike; ties: the lowest radius); with `keep` ({eps in
    1/255: share}), the most accurate one whose certified share at each eps is at least that share
    of its clean accuracy (ties: the lowest radius; None when no radius keeps the floors)."""
    if at is not None and keep:
        raise ConfigError("choose the radius by `at` or by `keep`, not both")
    if keep:
        rows = radius_table(links, radii, tuple(keep))
        ok = [r for r in rows if all(r[f"certified_{e:g}"] >= share * r["cascade"] for e, share in keep.items())]
        return _lowest_best(ok, lambda r: r["cascade"])
    if at is not None:
        rows = radius_table(links, radii, (at,))
        return _lowest_best(rows, lambda r: r["cascade"] + r[f"certified_{at:g}"])
    return _lowest_keeping(links, radius_table(links, radii), max_loss)


def _lowest_best(rows: list[dict[str, float]], score: Callable[[dict[str, float]], float]) -> float | None:
    """The lowest gate among a table's rows of the best score (None for no rows)."""
    if not rows:
        return None
    best = max(score(r) for r in rows)
    return min(r["gate"] for r in rows if score(r) >= best - 1e-9)


def pipeline_radius(runs: list[Path], pipeline: str) -> ExactRadius:
    """Links a dev sample of `runs` with a given exact head through its run's own `pipeline`
    (without its deep feature), for that head's answer and certified radius on the clean image.
    Runs whose pipeline and KB are the same share one linker."""
    from retlink.attacks.attacked import clean_tensor
    from retlink.eval.certified import CertifiedConfig, CertifiedLinker
    from retlink.eval.config import EvalConfig
    from retlink.eval.runs import read_meta

    linkers: dict[tuple[str, str], CertifiedLinker] = {}
    where: dict[str, tuple[CertifiedLinker, Any]] = {}  # sample id -> (its run's linker, the sample)
    for run in runs:
        config = EvalConfig.model_validate(read_meta(run)["config"])
        spec = next((p for p in config.pipelines if p.name == pipeline), None)
        if spec is None or spec.kind != "certified":
            raise ConfigError(f"{run} has no certified pipeline {pipeline!r}")
        options = {k: v for k, v in spec.options.items() if k not in ("head", "exact_head", "gate_margin", "gate_radius")}
        kb = config.kb_path_of(spec)  # the pipeline's own KB where it has one (embedded with its own weights)
        key = (str(kb), json.dumps(options, sort_keys=True))
        if key not in linkers:
            linkers[key] = CertifiedLinker.from_kb(kb, CertifiedConfig(**{**options, "deep": False}))
        for sample in config.samples(None):
            where[sample.id] = (linkers[key], sample)

    def radius(head: DecisionHead, sample_id: str) -> tuple[bool, float]:
        linker, sample = where[sample_id]
        linker.head = head
        result = linker.link(clean_tensor(sample.image_path, 224), sample.mention, sample.context)
        answer = result.candidates[0].entity.id if result.candidates else None
        return answer == sample.gold_id, float(result.trace[-1].detail["radius_255"])

    return radius


def pooled_records(runs: list[Path]) -> list[dict[str, Any]]:
    """The records of several runs (a dev and a train split, say), refused when two runs hold
    the same sample: its links would be counted twice and could land on both sides of a fold."""
    records: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for run in runs:
        got = list(read_records(run / RESULTS).values())
        if not got:
            raise ConfigError(f"{run} holds no records (a `retlink train` run folder?)")
        for sample_id in {r["sample_id"] for r in got}:
            if sample_id in seen:
                raise ConfigError(f"sample {sample_id!r} is in both {seen[sample_id]} and {run}: give runs of disjoint splits")
            seen[sample_id] = run
        records += got
    return records


def _alone(links: list[HeldOut]) -> tuple[float, float]:
    """The deep head's and the exact head's accuracy alone on the links, in %."""
    n = len(links)
    return 100 * sum(x.deep_right for x in links) / n, 100 * sum(x.exact_right for x in links) / n


def _lowest_keeping(links: list[HeldOut], rows: list[dict[str, float]], max_loss: float) -> float | None:
    """The lowest gate of a table whose cascade loses at most `max_loss` points to the deep head."""
    deep, _ = _alone(links)
    ok = [r["gate"] for r in rows if r["cascade"] >= deep - max_loss]
    return min(ok) if ok else None


def choose_gate(links: list[HeldOut], max_loss: float = 0.0, gates: tuple[float, ...] = GATES) -> float | None:
    """The lowest gate whose cascade loses at most `max_loss` points to the deep head alone."""
    return _lowest_keeping(links, gate_table(links, gates), max_loss)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "runs", type=Path, nargs="+", metavar="run",
        help="the `retlink train` runs of the deep certified pipeline (dev or train splits; their links are pooled)",
    )
    parser.add_argument("--pipeline", default="certified-deep")
    parser.add_argument("--l2", type=float, default=1e-2, help="the heads' penalty (the train configs')")
    parser.add_argument("--max-loss", type=float, default=0.0, help="clean points the cascade may lose to the deep head")
    parser.add_argument("--radius", action="store_true", help="choose a gate_radius (links each dev image again)")
    parser.add_argument(
        "--at", type=float, default=None,
        help="with --radius: the budget (1/255) whose certified share weighs as much as clean accuracy (instead of --max-loss)",
    )
    parser.add_argument(
        "--keep", type=_floor, action="append", default=[], metavar="EPS:SHARE",
        help="with --radius: a floor on the certified share at EPS (1/255), as a fraction of clean accuracy; repeatable",
    )
    args = parser.parse_args(argv)
    records = pooled_records(args.runs)
    label = ", ".join(map(str, args.runs))
    console = Console()
    if args.radius:
        links = held_out_links(records, args.pipeline, l2=args.l2, exact_radius=pipeline_radius(args.runs, args.pipeline))
        _print_radius(console, label, links, args.max_loss, args.at, dict(args.keep))
        return
    links = held_out_links(records, args.pipeline, l2=args.l2)
    deep, exact = _alone(links)
    table = Table(title=f"{label}: {len(links)} clean links, held out by sample fold")
    for col in ("gate", "cascade %", "exact answers %", "right by exact %"):
        table.add_column(col, justify="right")
    for r in gate_table(links):
        table.add_row(f"{r['gate']:g}", f"{r['cascade']:.1f}", f"{r['exact_answers']:.1f}", f"{r['right_by_exact']:.1f}")
    console.print(table)
    console.print(f"deep head alone {deep:.1f}, exact head alone {exact:.1f}")
    gate = choose_gate(links, args.max_loss)
    console.print(f"gate_margin: {gate}" if gate is not None else "no gate keeps the deep head's accuracy")


def _floor(text: str) -> tuple[float, float]:
    """`EPS:SHARE` (`--keep`): a budget in 1/255 and the share of clean accuracy certified at it."""
    try:
        eps, share = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give EPS:SHARE, e.g. 2:0.85") from None
    if eps <= 0 or not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: EPS > 0 (1/255) and 0 < SHARE <= 1")
    return eps, share


def _print_radius(
    console: Console, run: str, links: list[HeldOut], max_loss: float, at: float | None, keep: dict[float, float]
) -> None:
    table = Table(title=f"{run}: {len(links)} clean links, held out by sample fold (radius gates, 1/255)")
    for col in ("gate", "cascade %", "exact answers %", *(f"certified {e:g}/255 %" for e in TABLE_EPS_255)):
        table.add_column(col, justify="right")
    for r in radius_table(links):
        table.add_row(
            f"{r['gate']:g}", f"{r['cascade']:.1f}", f"{r['exact_answers']:.1f}",
            *(f"{r[f'certified_{e:g}']:.1f}" for e in TABLE_EPS_255),
        )
    console.print(table)
    deep, exact = _alone(links)
    console.print(f"deep head alone {deep:.1f}, exact head alone {exact:.1f}")
    gate = choose_radius(links, max_loss, at=at, keep=keep)
    unmet = "no radius keeps the certified floors" if keep else "no radius keeps the deep head's accuracy"
    console.print(f"gate_radius: {gate:g}/255" if gate is not None else unmet)


if __name__ == "__main__":
    main()
