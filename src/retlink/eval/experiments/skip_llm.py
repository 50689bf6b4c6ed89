"""Choosing `decision.skip_llm_above` on dev links, and what skipping costs (issue 20, item 2).

A link whose decision head is at least `skip_llm_above` sure decides without search, enhancer
and reasoner: its answer is then exactly the head-only agent's answer (`reasoner.enabled: false`
with the same head), and every other link's answer is the LLM agent's. So one run with both
pipelines on a split (each record keeps the head's confidence, `head_p`) gives the answers of
every threshold at once, without a third pipeline per threshold:

    python -m retlink.eval.experiments.skip_llm runs/skip-llm-dev                    # choose on DEV
    python -m retlink.eval.experiments.skip_llm runs/skip-llm-test --threshold 0.9   # measure on TEST

The threshold chosen is the lowest (most links skip) whose accuracy on the given links is no
lower than the LLM on every link (`--max-loss` allows a loss, in links). The cost is the paired
difference to the LLM on every link, with a paired bootstrap CI over samples.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from retlink.core.errors import ConfigError
from retlink.eval.runs import RESULTS, bootstrap_ci, read_records

NEVER = math.inf


@dataclass(frozen=True)
class Pair:
    """One sample linked both ways: with the LLM (under the head) and by the head alone."""

    sample_id: str
    head_p: float
    llm_correct: bool
    head_correct: bool


def pairs_from_run(
    run_dir: str | Path, *, llm: str, head: str, setting: str = "it2t", attack: str = "clean"
) -> list[Pair]:
    """The samples both pipelines linked (status ok) under one setting and attack."""
    records = read_records(Path(run_dir) / RESULTS)
    by = {
        (r["pipeline"], r["sample_id"]): r
        for r in records.values()
        if r.get("status") == "ok" and r["setting"] == setting and r["attack"] == attack
    }
    out = []
    for (pipe, sid), r in sorted(by.items()):
        other = by.get((head, sid))
        if pipe != llm or other is None:
            continue
        if "head_p" not in r:
            raise ConfigError(f"{run_dir}: pipeline {llm!r} has no head_p in its records (no decision.head?)")
        out.append(Pair(sid, float(r["head_p"]), bool(r["correct"]), bool(other["correct"])))
    if not out:
        raise ConfigError(f"{run_dir}: no sample linked by both {llm!r} and {head!r} ({setting}, {attack})")
    return out


def outcome(pairs: list[Pair], threshold: float) -> dict[str, float]:
    """Skip share, accuracy with skipping, accuracy of the LLM on every link, and the paired
    difference (with its 95% bootstrap CI) at one threshold."""
    skipped = [p.head_p >= threshold for p in pairs]
    with_skip = np.array(
        [p.head_correct if s else p.llm_correct for p, s in zip(pairs, skipped, strict=True)], float
    )
    llm = np.array([p.llm_correct for p in pairs], float)
    lo, hi = bootstrap_ci(with_skip - llm, n_resamples=2000)
    return {
        "threshold": threshold,
        "n": len(pairs),
        "skip_share": float(np.mean(skipped)),
        "accuracy": float(with_skip.mean()),
        "llm_accuracy": float(llm.mean()),
        "diff": float((with_skip - llm).mean()),
        "diff_ci": (lo, hi),
    }


def choose_threshold(pairs: list[Pair], max_loss: int = 0) -> float:
    """The lowest threshold (the most links skipped) under which at most `max_loss` skipped
    links are lost: the LLM got them right and the head alone does not. Strict on purpose: a
    link the head gets right where the LLM did not does not pay for one lost (that would be
    dev noise traded for dev noise). `inf` (never skip) when no threshold qualifies."""
    for t in sorted({p.head_p for p in pairs} | {0.0}):
        lost = sum(p.llm_correct and not p.head_correct for p in pairs if p.head_p >= t)
        if lost <= max_loss:
            return t
    return NEVER


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(
        prog="python -m retlink.eval.experiments.skip_llm", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--llm", default="agent-head-llm", help="the pipeline with the LLM under the head")
    ap.add_argument("--head", default="agent-head", help="the head-only pipeline (reasoner disabled)")
    ap.add_argument("--setting", default="it2t")
    ap.add_argument("--attack", default="clean")
    ap.add_argument("--threshold", type=float, help="measure this threshold instead of choosing one")
    ap.add_argument("--max-loss", type=int, default=0, help="links the chosen threshold may lose")
    args = ap.parse_args(argv)
    pairs = pairs_from_run(
        args.run_dir, llm=args.llm, head=args.head, setting=args.setting, attack=args.attack
    )
    threshold = args.threshold if args.threshold is not None else choose_threshold(pairs, args.max_loss)
    result = outcome(pairs, threshold)
    table = Table(
        title=f"skip the LLM at head p >= {threshold}: {args.run_dir} ({args.setting}, {args.attack})"
    )
    for col in ("n", "skipped", "accuracy with skip", "LLM on every link", "paired diff [95% CI]"):
        table.add_column(col)
    lo, hi = result["diff_ci"]
    table.add_row(
        str(result["n"]),
        f"{100 * result['skip_share']:.1f}%",
        f"{100 * result['accuracy']:.1f}%",
        f"{100 * result['llm_accuracy']:.1f}%",
        f"{100 * result['diff']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]",
    )
    Console().print(table)
    return result


if __name__ == "__main__":
    main()
