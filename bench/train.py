"""The decision head's costs: training time on a dev split, and its added latency per link.

Training time: `DecisionHead.fit` plus its cross-validation on the links of a `retlink train`
run folder (the dev split's clean, augmented and attacked links), or, without one, on synthetic
links of the same shape and count (`--links`). The links themselves are the eval runner's work
and are reported by its own progress bar and records, not here.

Latency: the head's share of a link, measured in this run as the `rank` node's time with the head
against the same link's total time (the retrieval-only agent and the full default agent); the
share, not seconds, is what this noisy shared machine can compare.

    .venv/bin/python bench/train.py [--run runs/logos-train] [--links 2000] [--n 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "src" / "retlink" / "data" / "demo"
console = Console()


def training_groups(run: Path | None, links: int):
    from retlink.agent.decision import Group
    from retlink.agent.decision.features import FEATURES
    from retlink.eval.runs import RESULTS, read_records
    from retlink.train import groups_from_records

    if run is not None:
        records = list(read_records(run / RESULTS).values())
        pipelines = sorted({r["pipeline"] for r in records if r.get("features")})
        groups, ids, _ = groups_from_records(records, pipelines)
        return groups, ids, f"{run} ({len(groups)} links)"
    rng = np.random.default_rng(0)
    groups = [Group(rows=rng.normal(size=(60, len(FEATURES))), nil=rng.normal(size=4), gold=int(rng.integers(60))) for _ in range(links)]
    return groups, [str(i // 4) for i in range(links)], f"synthetic ({links} links, 60 candidates each)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=None, help="a retlink train run folder (default: synthetic links)")
    ap.add_argument("--links", type=int, default=2000)
    ap.add_argument("--n", type=int, default=6, help="demo examples to link for the latency share")
    args = ap.parse_args()

    from retlink.agent.decision import DecisionHead
    from retlink.agent.decision.features import FEATURES, NIL_FEATURES
    from retlink.train import cross_validate

    groups, ids, source = training_groups(args.run, args.links)
    t = time.perf_counter()
    head = DecisionHead.fit(groups, list(FEATURES), list(NIL_FEATURES))
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    cross_validate(groups, ids, list(FEATURES), list(NIL_FEATURES), 1e-2, 5)
    cv_s = time.perf_counter() - t

    # latency share: a head fitted on the demo KB's own links, then links with and without it
    from retlink import Linker
    from retlink.agent.backends import open_kb
    from retlink.agent.decision import kb_fingerprint

    rows = [json.loads(x) for x in (DEMO / "examples.jsonl").read_text().splitlines() if x.strip()][: args.n]
    tmp = REPO / ".cache" / "bench-head.json"
    head.fingerprint = kb_fingerprint(open_kb(None).manifest)
    head.save(tmp)
    shares = {}
    for label, cfg in (
        ("retrieval-only agent + head", {"reasoner": {"enabled": False}, "decision": {"head": str(tmp)}}),
        ("default agent + head", {"decision": {"head": str(tmp)}}),
    ):
        linker = Linker.from_config(cfg)
        linker.link(DEMO / rows[0]["image"], rows[0]["mention"], rows[0]["context"])  # warm up
        parts = []
        for r in rows:
            res = linker.link(DEMO / r["image"], r["mention"], r["context"])
            total = sum(ev.seconds for ev in res.trace)
            rank = sum(ev.seconds for ev in res.trace if ev.node == "rank")
            parts.append(rank / total)
        shares[label] = statistics.median(parts)

    table = Table(title="decision head costs (2 shared cores)")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row(f"fit on {source}", f"{fit_s:.1f} s")
    table.add_row("5-fold cross-validation", f"{cv_s:.1f} s")
    table.add_row("fit + CV vs the 10-minute goal", f"{(fit_s + cv_s) / 600:.3f} x")
    for label, share in shares.items():
        table.add_row(f"head share of a link: {label} (median of {len(rows)})", f"{share:.2%}")
    console.print(table)


if __name__ == "__main__":
    main()
