"""Defence benchmark: what each defence buys and costs, in one run on the demo data.

    .venv/bin/python bench/defences.py [--links] [--latency-n 6] [--eot-samples 4]

For each defence (none, JPEG purification, feature-squeezing detection with routing, both):
- accuracy clean, under a non-adaptive PGD (normal preset, on the bare model) and under the
  adaptive attacks that know the defence (BPDA/EOT, detector-aware; per-sample worst case), as
  absolute points and as the share of the undefended drop recovered, with 95% bootstrap CIs
  (`retlink.eval.defences`; model level = the tagger's top-1, retrieval level = the KB image
  retrieval's top-1 against the gold entity, `--links` adds the full agent; `--target` picks
  what the attacks aim at, the image embedding by default);
- the detector's ROC AUC (clean vs PGD), false-positive rate on clean images and detection rate
  under the detector-aware attack;
- the latency each defence adds to a link, as a ratio to the link without it (goal: < 10%):
  the detect and purify nodes' own seconds from the trace, over the rest of the same link, on
  clean and on PGD images (a flagged PGD image also pays for purification). The wall time of
  the undefended linker on the same images is printed beside it (noisier: the LLM dominates).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from retlink.eval.defences import (
    ADAPTIVE,
    CLEAN,
    NON_ADAPTIVE,
    DefenceEvalConfig,
    evaluate,
    load_examples,
    summarise,
    write,
)

console = Console()
REPO = Path(__file__).resolve().parent.parent
DEFENCE_NODES = ("detect", "purify")


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.0f}%"


def _pts(v: float) -> str:
    return "n/a" if v != v else f"{100 * v + 0.0:+.0f}"


def _ci(ci: tuple[float, float]) -> str:
    return f"[{100 * ci[0] + 0.0:.0f}, {100 * ci[1] + 0.0:.0f}]"


def accuracy_tables(results) -> None:
    for level in results.levels:
        table = Table(
            "defence",
            "clean [95% CI]",
            "clean cost",
            "PGD [CI]",
            "PGD gain",
            "PGD recovered",
            "adaptive [CI]",
            "adaptive gain",
            "adaptive recovered",
            "flagged clean/PGD/adaptive",
            title=f"{level} level, {len(results.samples)} demo samples (gain and cost in points vs no defence)",
        )
        for r in summarise(results, level):
            table.add_row(
                r["defence"],
                f"{_pct(r[CLEAN])} {_ci(r[f'{CLEAN}_ci'])}",
                _pts(-r["clean_cost"]),
                f"{_pct(r[NON_ADAPTIVE])} {_ci(r[f'{NON_ADAPTIVE}_ci'])}",
                _pts(r[f"{NON_ADAPTIVE}_gain"]),
                _pct(r[f"{NON_ADAPTIVE}_recovered"]),
                f"{_pct(r[ADAPTIVE])} {_ci(r[f'{ADAPTIVE}_ci'])}",
                _pts(r[f"{ADAPTIVE}_gain"]),
                _pct(r[f"{ADAPTIVE}_recovered"]),
                " / ".join(
                    _pct(r.get(f"{c}_flagged", float("nan"))) for c in (CLEAN, NON_ADAPTIVE, ADAPTIVE)
                ),
            )
        console.print(table)
    det = results.detector
    if det:
        console.print(
            f"detector (threshold {det['threshold']}): ROC AUC clean vs PGD [bold]{det['roc_auc_pgd']:.2f}[/], "
            f"FPR on clean {_pct(det['fpr_clean'])}, detected PGD {_pct(det['tpr_pgd'])}, detected "
            f"detector-aware {_pct(det.get('tpr_detector_aware', float('nan')))} (AUC "
            f"{det.get('roc_auc_detector_aware', float('nan')):.2f}); threshold calibrated on these images"
        )


def latency_table(results, cfg: DefenceEvalConfig, n: int) -> None:
    from retlink import Linker

    examples = load_examples(cfg.data, n)
    rows = []
    wall_none: dict[str, list[float]] = {}
    for spec in cfg.defences:
        linker = Linker.from_config({"defence": spec.defence.model_dump(mode="json")})
        ex0 = examples[0]
        linker.link(results.images[CLEAN][0], ex0["mention"], ex0["context"])  # warm up
        for cond in (CLEAN, NON_ADAPTIVE):
            added, rest, wall, flagged = [], [], [], 0
            for img, ex in zip(results.images[cond][:n], examples, strict=True):
                t = time.perf_counter()
                r = linker.link(img, ex["mention"], ex["context"])
                wall.append(time.perf_counter() - t)
                own = sum(e.seconds for e in r.trace if e.node in DEFENCE_NODES)
                added.append(own)
                rest.append(sum(e.seconds for e in r.trace if e.node not in DEFENCE_NODES))
                flagged += bool(r.perturbed)
            if spec.name == "none":
                wall_none[cond] = wall
            rows.append((spec.name, cond, added, rest, wall, flagged))
    table = Table(
        "defence",
        "images",
        "detect+purify (median)",
        "rest of link (median)",
        "added / link without it",
        "wall median",
        "wall vs none",
        "flagged",
        title=f"latency per link, {n} demo examples, embedded default",
    )
    for name, cond, added, rest, wall, flagged in rows:
        ratio = sum(added) / sum(rest)
        base = statistics.median(wall_none[cond]) if cond in wall_none else float("nan")
        table.add_row(
            name,
            cond,
            f"{1000 * statistics.median(added):.0f} ms",
            f"{statistics.median(rest):.2f} s",
            f"[{'green' if ratio < 0.10 else 'red'}]{100 * ratio:.1f}%[/]",
            f"{statistics.median(wall):.2f} s",
            f"{statistics.median(wall) / base:.2f}x",
            f"{flagged}/{len(wall)}",
        )
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--links", action="store_true", help="also the full agent's accuracy (slow)")
    ap.add_argument("--latency-n", type=int, default=6, help="demo examples linked per defence for latency")
    ap.add_argument("--eot-samples", type=int, default=4)
    ap.add_argument(
        "--target",
        choices=["embedding_toward_distractor", "classifier"],
        default="embedding_toward_distractor",
        help="what the attacks aim at: the image embedding (retrieval) or the tagger's label",
    )
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-defences")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console)])

    cfg = DefenceEvalConfig(eot_samples=args.eot_samples, links=args.links, target=args.target)
    started = time.perf_counter()
    results = evaluate(cfg)
    console.print(
        f"attacks and scoring: {time.perf_counter() - started:.0f} s; attack seconds {results.seconds}"
    )
    accuracy_tables(results)
    console.print(f"report: {write(results, args.out)}")
    if args.latency_n:
        latency_table(results, cfg, args.latency_n)


if __name__ == "__main__":
    main()
