"""Defence benchmark: what each defence buys and costs, read from one eval-runner run.

    .venv/bin/python bench/defences.py [RUN_DIR] [--config src/retlink/eval/configs/defences/defences.yaml] [--limit N]

Runs (or resumes) the defence config with the eval runner, unless RUN_DIR already holds its
run, then prints from the run's records alone:
- per pipeline (each level without and with its defences: tagger, retrieval, agent), Hits@1
  clean, under the non-adaptive PGD and under `attack: adaptive` (the attacks derived from the
  pipeline's own defences, per-sample worst case), with 95% bootstrap CIs from summary.json, and
  the share of the undefended pipeline's drop under an attack that each defended one recovers
  ((defended - undefended Hits@1) / (undefended clean - attacked Hits@1), same attack);
- the detector as a detector (ROC AUC, FPR on clean images, detection rate), from summary.json;
- the latency each defence adds to a link, as a ratio to the link without it (goal: < 10%):
  the detect and purify nodes' own seconds, recorded per link in `nodes`, over the rest of the
  same link, clean and attacked.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

console = Console()
REPO = Path(__file__).resolve().parent.parent
DEFENCE_NODES = ("detect", "purify")
CLEAN = "clean"


def whole_pct(v: float | None) -> str:
    """A share in whole percent with a sign ('83%'), 'n/a' when missing: the bench's terse table
    (the reports' one-decimal form is `retlink.eval.runs.pct`)."""
    return "n/a" if v is None or v != v else f"{100 * v:.0f}%"


def _ci(ci: list[float]) -> str:
    return f"[{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def undefended(name: str, pipelines: dict[str, str]) -> str | None:
    """The bare pipeline of a level: same kind, named by the prefix before '-' (tagger-purify ->
    tagger), if the config has it."""
    base = name.split("-")[0]
    return base if base != name and pipelines.get(base) == pipelines.get(name) else None


def accuracy_table(summary: dict, kinds: dict[str, str]) -> None:
    for sname, st in summary["settings"].items():
        conds = st["conditions"]
        table = Table("pipeline", *conds, *(f"recovered ({c})" for c in conds if c != CLEAN), title=f"Hits@1, setting {sname}")
        rows = st["pipelines"]
        for pipe, row in rows.items():
            cells = [f"{whole_pct(row[c]['hits@1'])} {_ci(row[c]['hits@1_ci'])}" if c in row else "–" for c in conds]
            bare = undefended(pipe, kinds)
            rec = []
            for c in conds:
                if c == CLEAN:
                    continue
                if bare is None or c not in row or bare not in rows:
                    rec.append("–")
                    continue
                ref = rows[bare]
                drop = ref[CLEAN]["hits@1"] - ref[c]["hits@1"]
                gain = row[c]["hits@1"] - ref[c]["hits@1"]
                rec.append(whole_pct(gain / drop) if drop > 0 else "n/a")
            table.add_row(pipe, *cells, *rec)
        console.print(table)


def detector_table(summary: dict) -> None:
    dets = summary.get("detectors") or {}
    if not dets:
        return
    table = Table("setting", "pipeline", "attack", "ROC AUC", "FPR clean", "detected", title="the detector as a detector")
    for sname, pipes in dets.items():
        for pipe, attacks in pipes.items():
            for attack, d in attacks.items():
                table.add_row(sname, pipe, attack, f"{d['roc_auc']:.2f}", whole_pct(d["fpr_clean"]), whole_pct(d["detection_rate"]))
    console.print(table)
    console.print("threshold calibrated on the demo photos: in-sample")


def latency_table(records: list[dict]) -> None:
    """detect + purify seconds over the rest of the same link, per pipeline and condition."""
    added: dict[tuple[str, str], float] = defaultdict(float)
    rest: dict[tuple[str, str], float] = defaultdict(float)
    links: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        nodes = r.get("nodes") or {}
        if r.get("status") != "ok" or not any(n in nodes for n in DEFENCE_NODES):
            continue
        key = (r["pipeline"], CLEAN if r["attack"] == CLEAN else "attacked")
        added[key] += sum(s for n, s in nodes.items() if n in DEFENCE_NODES)
        rest[key] += sum(s for n, s in nodes.items() if n not in DEFENCE_NODES)
        links[key] += 1
    table = Table("pipeline", "images", "links", "detect+purify per link", "added / rest of link", title="defence latency")
    for key in sorted(added):
        ratio = added[key] / rest[key] if rest[key] else float("nan")
        table.add_row(
            *key,
            str(links[key]),
            f"{1000 * added[key] / links[key]:.0f} ms",
            f"[{'green' if ratio < 0.10 else 'red'}]{100 * ratio:.1f}%[/]",
        )
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", type=Path, help="an existing run of the config (default: run it)")
    ap.add_argument("--config", type=Path, default=REPO / "src" / "retlink" / "eval" / "configs" / "defences" / "defences.yaml")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console)])

    from retlink.eval.config import load_eval_config
    from retlink.eval.report import write_report
    from retlink.eval.runner import Runner
    from retlink.eval.runs import RESULTS

    cfg = load_eval_config(args.config)
    runner = Runner(cfg, args.run_dir)
    runner.run(args.limit)
    summary = write_report(runner.dir, plots=False)
    records = [json.loads(line) for line in (runner.dir / RESULTS).read_text().splitlines() if line.strip()]
    kinds = {p.name: p.kind for p in cfg.pipelines}
    accuracy_table(summary, kinds)
    detector_table(summary)
    latency_table(records)
    console.print(f"report: {runner.dir / 'report.md'}")


if __name__ == "__main__":
    main()
