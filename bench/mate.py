"""MATE benchmark: scenes generated and rendered per second, questions the binding agent
answers per second, and scenes attacked per second (Square on the agent's perception, as
`retlink mate run` with `attacks:` makes them), each as a ratio to a baseline timed in the same run.

    .venv/bin/python bench/mate.py [--questions 40] [--seed 0] [--attack-scenes 5] [--queries 20]

The questions are the first N of the 5,500-question set of `--seed` (a seeded mix of tasks and
object counts). Generation includes the layout (silhouette checks) and the PNG encoding, as
`retlink mate build` does. The baseline is the renderer without supersampling (one ray a pixel)
on the same scenes; every row's ratio is its rate over the baseline's (below 1: slower). The
agent's time is also shown per node (parse, perceive, link, answer). Times are wall clock on
whatever else the machine is doing: compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from retlink.mate.agent.graph import BindingAgent
from retlink.mate.questions import exact_match, make_question, plan
from retlink.mate.render import render, render_array

console = Console()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attack-scenes", type=int, default=5, help="scenes to attack (0: skip)")
    ap.add_argument("--queries", type=int, default=20, help="Square's query budget a scene")
    args = ap.parse_args()
    items = plan(5500, 1100, args.seed)[: args.questions]

    t0 = time.perf_counter()
    scenes = [make_question(i, split, config, args.seed) for i, (split, config) in enumerate(items)]
    layout_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    images = [render(scene) for _, scene in scenes]
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pngs = []
    for img in images:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        pngs.append(buf.getvalue())
    png_s = time.perf_counter() - t0
    made = [(q, scene, png) for (q, scene), png in zip(scenes, pngs, strict=True)]
    gen_s = layout_s + render_s + png_s

    t0 = time.perf_counter()
    for _, scene, _ in made:
        render_array(scene, ss=1)
    base_s = time.perf_counter() - t0

    agent = BindingAgent(made[0][1].camera)
    node_s: dict[str, float] = defaultdict(float)
    right = 0
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for q, _, png in made:
            p = Path(tmp) / f"{q.scene}.png"
            p.write_bytes(png)
            paths.append(p)
        t0 = time.perf_counter()
        per_q = []
        for (q, scene, _), p in zip(made, paths, strict=True):
            s = time.perf_counter()
            result = agent.answer(p, scene.text(), q.question)
            per_q.append(time.perf_counter() - s)
            right += exact_match(result["answer"] if result["answer"] is not None else "", q.answer)
            for e in result["trace"]:
                node_s[e["node"]] += e["seconds"]
        agent_s = time.perf_counter() - t0

    attacked = attack_rate(made[: args.attack_scenes], args.queries) if args.attack_scenes else None

    n = len(made)
    table = Table("what", "per second", "ratio", title=f"MATE, {n} questions (seed {args.seed})")
    table.add_row("baseline: render, one ray a pixel", f"{n / base_s:.2f}", "1.00x")
    table.add_row("render, 2x2 anti-aliased (what build does)", f"{n / render_s:.2f}", f"{base_s / render_s:.2f}x")
    table.add_row("scene layout (question + occlusion-free placement)", f"{n / layout_s:.2f}", f"{base_s / layout_s:.2f}x")
    table.add_row("PNG encoding", f"{n / png_s:.2f}", f"{base_s / png_s:.2f}x")
    table.add_row("scenes generated in all (layout + render + PNG)", f"{n / gen_s:.2f}", f"{base_s / gen_s:.2f}x")
    table.add_row("questions answered by the binding agent", f"{n / agent_s:.2f}", f"{base_s / agent_s:.2f}x")
    if attacked is not None:
        k, seconds = attacked
        table.add_row(f"scenes attacked: Square on the perception, <= {args.queries} queries", f"{k / seconds:.2f}", f"{base_s / n / (seconds / k):.2f}x")
    console.print(table)
    console.print(f"agent median {statistics.median(per_q):.3f} s a question; by node: "
                  + ", ".join(f"{k} {v / n:.3f} s" for k, v in node_s.items()))
    console.print(f"agent exact match on these questions: {right}/{n}")


def attack_rate(made: list, queries: int) -> tuple[int, float]:
    """(scenes, seconds) to attack the scenes' PNGs with Square on the binding agent's perception
    (`retlink.mate.attack.PerceptionTarget`; it stops at a scene's first changed reading)."""
    import numpy as np
    import torch
    from PIL import Image

    from retlink.attacks import build_attack
    from retlink.mate.attack import PerceptionTarget

    x = torch.stack([
        torch.from_numpy(np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        for _, _, png in made
    ])
    attack = build_attack("square", PerceptionTarget(made[0][1].camera), n_queries=queries, seed=0)
    t0 = time.perf_counter()
    attack(x, [scene.text() for _, scene, _ in made])
    return len(made), time.perf_counter() - t0


if __name__ == "__main__":
    main()
