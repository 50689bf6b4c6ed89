"""Past one process, measured in one run: eval throughput with the local executor against Ray with
1 and 2 link actors, per-link cost by stage, and KB query latency embedded against a chroma server.

    .venv/bin/python bench/scale.py [--n 12] [--pipelines baseline agent-retrieval] [--entities 10000]

Eval: the demo set (first N samples) x the pipelines x (clean + PGD 8/255, 10 steps) x the
settings it2t and i2t_mention, concurrency 2
everywhere. The attacked images are made once, before any timing, and copied into each run's
fresh folder, so every executor measures the same linking work; Ray's attack tasks are covered by
tests/distributed. The local run gets pipelines built and warmed (one link each) outside its timing; a Ray
actor loads and warms its own on start, which is timed apart ("start s") and left out of its
throughput, as model loading is left out of the local one. The Ray cluster is a real `ray start --head` on
127.0.0.1 with 2 CPUs (tests/ray_cluster.py): 1 actor gets both (torch uses 2 threads, as in the
local process), 2 actors one each. Goal (issue 18): Ray overhead under 10% at 1 actor.

KB: bench/kb_server.py's comparison (same vectors, queries and HNSW settings; goal: server p50
under 3x embedded at 10k entities).

The machine is shared and noisy (the load average is printed at start and end): read the ratios,
measured in the same process minutes apart, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO)]

import eval_throughput  # noqa: E402  (bench/eval_throughput.py: stages of the trace, stage seconds)
import kb_server  # noqa: E402  (bench/kb_server.py: embedded vs server latency)

console = Console(width=160)  # the stage table is wide; logs keep every column

PIPELINES = {
    "baseline": {"name": "baseline", "kind": "baseline"},
    # the agent without any LLM: caption, retrieval, the decision head or fused ranking
    "agent-retrieval": {"name": "agent-retrieval", "kind": "agent", "overrides": {"reasoner": {"enabled": False}}},
    # the agent with the default's in-process reasoner (a prefill and a scoring pass a link)
    "agent-nosearch": {"name": "agent-nosearch", "kind": "agent", "overrides": {"search": {"enabled": False}}},
}


def config(kb: Path, out: Path, n: int, pipelines: list[str], executor: dict | None = None) -> dict:
    cfg = {
        "name": "scale",
        "dataset": {"key": "demo", "split": "test", "limit": n},
        "kb": {"path": str(kb), "entities": str(REPO / "src" / "retlink" / "data" / "demo" / "entities.jsonl")},
        "pipelines": [PIPELINES[p] for p in pipelines],
        "attacks": [{"name": "pgd-8", "attack": "pgd", "params": {"eps": "8/255", "alpha": "2/255", "steps": 10}}],
        "settings": ["it2t", "i2t_mention"],
        "concurrency": 2,
        "output_dir": str(out),
    }
    if executor:
        cfg["executor"] = executor
    return cfg


def fresh_run(images_from: Path, out: Path) -> Path:
    """A new run folder holding the already made attacked images."""
    out.mkdir(parents=True)
    shutil.copytree(images_from / "attacked", out / "attacked")
    return out


def per_link_stages(results: Path) -> dict[str, dict[str, float]]:
    """{pipeline: {stage: mean seconds per link, "link": mean seconds of a whole link}} from the
    records' per-node trace seconds (the attacks are counted apart: made once per image)."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for line in results.read_text().splitlines():
        rec = json.loads(line)
        pipe = rec["pipeline"]
        counts[pipe] += 1
        sums[pipe]["link"] += rec["seconds"]
        for node, sec in (rec.get("nodes") or {}).items():
            stage = next((k for k, nodes in eval_throughput.STAGES.items() if node in nodes), "other")
            sums[pipe][stage] += sec
    return {p: {k: v / counts[p] for k, v in stages.items()} for p, stages in sums.items()}


def eval_throughput_rows(n: int, pipelines: list[str], tmp: Path) -> tuple[list[tuple], float]:
    """[(executor, actors, start s, link wall s, links, per-link stage seconds)] and the mean
    attack seconds per image."""
    from retlink.eval.config import load_eval_config
    from retlink.eval.pipelines import build_pipeline
    from retlink.eval.runner import Runner
    from retlink.eval.runs import RESULTS
    from tests.ray_cluster import RayCluster

    # a KB of the bench's own: a shared cached one may name images of a checkout that is gone
    kb = tmp / "demo-kb"
    with console.status("building the demo KB, making the attacked images, warming the models (not timed)..."):
        first = Runner(load_eval_config(config(kb, tmp / "images", n, pipelines)))
        first.run(progress=False)
    images = first.dir
    made = [json.loads(x) for x in (images / RESULTS).read_text().splitlines()]
    attack_s = [r["attack_seconds"] for r in made if r.get("attack_seconds") is not None]

    rows = []
    # local: pipelines built and warmed outside the timing
    cfg = load_eval_config(config(kb, tmp / "local", n, pipelines))
    pipes = {p.name: build_pipeline(p, kb) for p in cfg.pipelines}
    for p in pipes.values():  # warmed as a Ray actor warms itself (one clean link of the first job)
        s = first.samples()[0]
        p.link(s.image_path, s.mention, s.context)
    runner = Runner(cfg, fresh_run(images, tmp / "local" / "run"), pipelines=pipes)
    started = time.perf_counter()
    plan = runner.run(progress=False)
    wall = time.perf_counter() - started
    links = len(plan.jobs)
    rows.append(("local", "-", 0.0, wall, links, per_link_stages(runner.dir / RESULTS)))

    import ray

    with console.status("starting a Ray head on 127.0.0.1 (2 CPUs)..."), RayCluster(num_cpus=2) as cluster:
        ray.init(address=cluster.address, namespace="retlink", log_to_driver=False)
        try:
            for actors in (1, 2):
                executor = {"kind": "ray", "address": cluster.address, "actors": actors, "num_cpus": 2 / actors}
                cfg = load_eval_config(config(kb, tmp / f"ray{actors}", n, pipelines, executor))
                runner = Runner(cfg, fresh_run(images, tmp / f"ray{actors}" / "run"))
                console.print(f"Ray, {actors} actor(s): starting the actors and linking...")
                started = time.perf_counter()
                plan = runner.run(progress=False)
                total = time.perf_counter() - started
                start_s = runner.executor.startup_seconds
                rows.append((
                    "ray", str(actors), start_s, total - start_s, len(plan.jobs),
                    per_link_stages(runner.dir / RESULTS),
                ))  # fmt: skip
        finally:
            ray.shutdown()
    return rows, sum(attack_s) / max(1, len(attack_s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=12, help="demo samples")
    ap.add_argument("--pipelines", nargs="+", default=["baseline", "agent-retrieval"], choices=sorted(PIPELINES))
    ap.add_argument("--entities", type=int, default=10_000, help="KB size of the latency comparison")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--skip-kb", action="store_true", help="only the eval throughput")
    args = ap.parse_args()

    console.print(
        f"bench/scale.py, {datetime.now(UTC).isoformat(timespec='minutes')}, {os.cpu_count()} CPUs, "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="retlink-bench-scale-"))
    rows, attack_per_image = eval_throughput_rows(args.n, args.pipelines, tmp)

    table = Table(
        title=f"eval throughput: {args.n} demo samples x {args.pipelines} x (clean + PGD 8/255, 10 steps) x (it2t, i2t_mention), concurrency 2"
    )
    for col in ("executor", "actors", "start s", "link wall s", "links/s", "vs local", "overhead"):
        table.add_column(col, justify="right")
    local_rate = rows[0][4] / rows[0][3]
    for kind, actors, start_s, wall, links, _ in rows:
        rate = links / wall
        ratio = rate / local_rate
        table.add_row(kind, actors, f"{start_s:.1f}", f"{wall:.1f}", f"{rate:.2f}", f"{ratio:.2f}x", f"{100 * (1 / ratio - 1):+.0f}%")
    console.print(table)
    one = rows[1][3] / rows[0][3] - 1
    verdict = "[green]meets[/]" if one < 0.10 else "[red]misses[/]"
    console.print(f"Ray at 1 actor: wall {100 * one:+.1f}% against local ({verdict} the goal of < 10% overhead)")

    stages = [*eval_throughput.STAGES, "other", "link"]
    st = Table(title="mean seconds per link by stage (the records' traces; link: the whole link)")
    for col in ("executor", "actors", "pipeline", *stages):
        st.add_column(col, justify="right")
    for kind, actors, _, _, _, by_pipe in rows:
        for pipe, secs in by_pipe.items():
            st.add_row(kind, actors, pipe, *(f"{secs.get(s, 0.0):.3f}" for s in stages))
    console.print(st)
    console.print(f"attack (PGD 8/255, 10 steps, batches of 8; made once, before the timing): {attack_per_image:.3f} s per image")

    if not args.skip_kb:
        with console.status(f"KB latency at {args.entities:,} entities: embedded vs chroma server..."):
            kb_rows = kb_server.compare(args.entities, 1_000, args.queries)
        kb_server.print_comparison(kb_rows, args.entities, args.queries)
    console.print(f"load average at end {os.getloadavg()[0]:.1f}; run folders under {tmp}")


if __name__ == "__main__":
    main()
