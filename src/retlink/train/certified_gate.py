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

The gate chosen is the lowest whose cascade is no less accurate on the clean dev links than the
deep head alone (`--max-loss` allows a loss, in points). The shares it prints are of clean links:
"exact answers" is where the gate opens, "right by exact" where it opens on a right answer (the
certified share, up to the image evidence's swing, which the pipeline's bound then checks per link).
"""

from __future__ import annotations

import argparse
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


@dataclass(frozen=True)
class HeldOut:
    """One clean dev link answered by heads fitted without its sample."""

    sample_id: str
    exact_right: bool
    exact_margin: float
    deep_right: bool


def held_out_links(
    records: list[dict[str, Any]], pipeline: str, *, l2: float = 1e-2, folds: int = 5, condition: str = "clean"
) -> list[HeldOut]:
    """Every link of `condition` answered by both heads fitted on the other folds (all conditions
    of the other samples: the heads see what `retlink train` gives them)."""
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
            out.append(HeldOut(sample_ids[i], e_answer == groups[i].gold, e_margin, d_answer == groups[i].gold))
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


def choose_gate(links: list[HeldOut], max_loss: float = 0.0, gates: tuple[float, ...] = GATES) -> float | None:
    """The lowest gate whose cascade loses at most `max_loss` points to the deep head alone."""
    deep = 100 * sum(x.deep_right for x in links) / len(links)
    ok = [r["gate"] for r in gate_table(links, gates) if r["cascade"] >= deep - max_loss]
    return min(ok) if ok else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the `retlink train` run of the deep certified pipeline (dev split)")
    parser.add_argument("--pipeline", default="certified-deep")
    parser.add_argument("--l2", type=float, default=1e-2, help="the heads' penalty (the train configs')")
    parser.add_argument("--max-loss", type=float, default=0.0, help="clean points the cascade may lose to the deep head")
    args = parser.parse_args(argv)
    links = held_out_links(list(read_records(args.run / RESULTS).values()), args.pipeline, l2=args.l2)
    console = Console()
    deep = 100 * sum(x.deep_right for x in links) / len(links)
    exact = 100 * sum(x.exact_right for x in links) / len(links)
    table = Table(title=f"{args.run}: {len(links)} clean links, held out by sample fold")
    for col in ("gate", "cascade %", "exact answers %", "right by exact %"):
        table.add_column(col, justify="right")
    for r in gate_table(links):
        table.add_row(f"{r['gate']:g}", f"{r['cascade']:.1f}", f"{r['exact_answers']:.1f}", f"{r['right_by_exact']:.1f}")
    console.print(table)
    console.print(f"deep head alone {deep:.1f}, exact head alone {exact:.1f}")
    gate = choose_gate(links, args.max_loss)
    console.print(f"gate_margin: {gate}" if gate is not None else "no gate keeps the deep head's accuracy")


if __name__ == "__main__":
    main()
