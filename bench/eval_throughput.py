"""Throughput of a full evaluation (attack + link + record) at concurrency 1 and 4, and where the
time goes: attacks, captioning, retrieval, search, enhancing, reasoning (from the records' per-node
trace seconds and the attacks' per-image seconds).

Both runs use the same pipelines (models loaded and warmed once, outside the timing) and fresh run
folders, so each makes its attacked images again. The machine is shared and noisy: read the
concurrency result as the ratio printed beside the baseline (concurrency 1) measured in the same
process, and the stage shares as the answer to "what is slowest".

    .venv/bin/python bench/eval_throughput.py [--n 4] [--pipelines agent] [--steps 10] [--config deep]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
console = Console()

#: trace nodes grouped into the stages the issue asks about
STAGES = {
    "caption": ("caption",),
    "retrieve": ("retrieve", "baseline.embed", "baseline.rank"),
    "search": ("plan_queries", "search", "scrape"),
    "enhance": ("enhance",),
    "reason": ("reason", "decide"),
}


def bench_config(
    kb: Path, out: Path, n: int, pipelines: list[str], steps: int, concurrency: int, agent_config: str | None = None
) -> dict:
    specs = {
        "baseline": {"name": "baseline", "kind": "baseline"},
        "agent-nosearch": {
            "name": "agent-nosearch",
            "kind": "agent",
            "overrides": {"search": {"enabled": False}},
        },
        "agent": {"name": "agent", "kind": "agent"},
    }
    for spec in specs.values():
        if spec["kind"] == "agent" and agent_config is not None:
            spec["config"] = agent_config
    return {
        "name": f"bench-c{concurrency}",
        "dataset": {"key": "demo", "split": "test", "limit": n},
        "kb": {"path": str(kb), "entities": str(REPO / "src" / "retlink" / "data" / "demo" / "entities.jsonl")},
        "pipelines": [specs[p] for p in pipelines],
        "attacks": [{"name": "pgd-8", "attack": "pgd", "params": {"eps": "8/255", "steps": steps}}],
        "settings": ["it2t"],
        "concurrency": concurrency,
        "output_dir": str(out),
    }


def stage_seconds(results: Path) -> dict[str, float]:
    """Seconds per stage summed over the records (attacks: once per attacked image)."""
    out: dict[str, float] = defaultdict(float)
    attacked: dict[str, float] = {}
    for line in results.read_text().splitlines():
        rec = json.loads(line)
        if "attack_seconds" in rec:
            attacked[rec["sample_id"] + rec["attack"]] = rec["attack_seconds"]
        for node, s in (rec.get("nodes") or {}).items():
            stage = next((k for k, nodes in STAGES.items() if node in nodes), "other")
            out[stage] += s
    out["attack"] = sum(attacked.values())
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4, help="demo samples")
    ap.add_argument("--pipelines", nargs="+", default=["baseline", "agent"], help="baseline agent-nosearch agent")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--config", default=None, help="the agent pipelines' config (path or preset; default: the embedded default)")
    args = ap.parse_args()

    from retlink.eval.config import load_eval_config
    from retlink.eval.pipelines import build_pipeline
    from retlink.eval.runner import Runner
    from retlink.eval.runs import RESULTS

    tmp = Path(tempfile.mkdtemp(prefix="retlink-bench-eval-"))
    kb = Path.home() / ".cache" / "retlink" / "eval-demo-kb"
    first = load_eval_config(bench_config(kb, tmp, args.n, args.pipelines, args.steps, 1, args.config))
    runner = Runner(first)
    with console.status("loading models, building the KB if needed..."):
        runner.kb()
    from retlink.datasets import load_dataset

    warm = list(load_dataset("demo").samples())[-1]  # not measured (n < 12): warms models, not caches

    rows = []
    for c in args.concurrency:
        cfg = load_eval_config(bench_config(kb, tmp, args.n, args.pipelines, args.steps, c, args.config))
        # fresh pipelines per run: the agent caches enhanced descriptions per Linker, and a
        # second run on the same Linker would measure the cache, not the work
        with console.status(f"building and warming the pipelines (concurrency {c})..."):
            pipelines = {p.name: build_pipeline(p, kb) for p in first.pipelines}
            for p in pipelines.values():
                p.link(warm.image_path, warm.mention, warm.context)
        started = time.perf_counter()
        plan = Runner(cfg, pipelines=pipelines).run(progress=False)
        wall = time.perf_counter() - started
        rows.append((c, len(plan.samples), len(plan.jobs), wall, stage_seconds(cfg.run_dir() / RESULTS)))

    table = Table(
        title=f"eval throughput: {args.n} demo samples x {args.pipelines} x (clean + PGD-8/{args.steps} steps), "
        f"agent config {args.config or 'default'}"
    )
    for col in ("concurrency", "wall s", "samples/s", "links/s", "vs concurrency 1"):
        table.add_column(col, justify="right")
    base = rows[0][3]
    for c, n, links, wall, _ in rows:
        table.add_row(str(c), f"{wall:.1f}", f"{n / wall:.3f}", f"{links / wall:.2f}", f"{base / wall:.2f}x")
    console.print(table)

    shares = Table(title="share of stage time (summed per-link seconds; overlapping at concurrency > 1)")
    stages = ["attack", *STAGES, "other"]
    shares.add_column("concurrency", justify="right")
    for s in stages:
        shares.add_column(s, justify="right")
    for c, _, _, _, secs in rows:
        total = sum(secs.values()) or 1.0
        shares.add_row(str(c), *(f"{100 * secs.get(s, 0.0) / total:.1f}%" for s in stages))
    console.print(shares)
    slowest = max(rows[0][4].items(), key=lambda kv: kv[1])[0]
    console.print(f"slowest stage at concurrency 1: [bold]{slowest}[/]; run folders under {tmp}")


if __name__ == "__main__":
    main()
