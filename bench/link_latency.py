"""Latency of a config (the embedded default unless `--config`): cold start, warm link, and
link_many at concurrency 4.

The goals are issue 20's, on 2 quiet cores. Cold start is measured in a fresh subprocess
(process start to first answer, demo KB already built). Warm latency and the concurrency ratio are measured in this process on the demo
examples. This machine is shared and noisy, so the concurrency result is printed as a ratio to
sequential linking measured in the same run, and the LLM micro-batcher's gain as a ratio to the
same concurrent links with batching off (one prompt per batch, as behind the old lock).
`--compare CFG` links the same examples with a second config (a path or a preset name, e.g.
`fast`), interleaved link by link with --config's warm links so the load hits both alike,
and prints its warm median as a ratio to --config's.

    .venv/bin/python bench/link_latency.py [--n 6] [--config CFG] [--compare CFG]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"
console = Console()

COLD = """
import time, sys
t0 = float(sys.argv[1])
from retlink import Linker
linker = Linker.from_config(sys.argv[2])
r = linker.link("data/demo/images/coffee.jpg", "Java", "A fresh cup of [Java] on the saucer.")
print(time.time() - t0, r.entity_id)
"""


def cold_start(config: str) -> float:
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", COLD, str(t0), config], cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1].split()[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6, help="demo examples to link")
    ap.add_argument("--config", default="default", help="the config timed (path or preset)")
    ap.add_argument("--compare", default=None, help="a second config (path or preset) timed against --config")
    args = ap.parse_args()

    from retlink import Linker, Sample

    rows = [json.loads(x) for x in (DEMO / "examples.jsonl").read_text().splitlines() if x.strip()][: args.n]
    samples = [Sample(DEMO / r["image"], r["mention"], r["context"]) for r in rows]
    linker = Linker.from_config(args.config)
    linker.link(samples[0].image, samples[0].mention, samples[0].context)  # warm up (and build the KB)

    other = None
    if args.compare:
        other = Linker.from_config(args.compare)
        other.link(samples[0].image, samples[0].mention, samples[0].context)  # warm up

    cold = cold_start(args.config)
    times, other_times = [], []
    for s in samples:  # interleaved with the compared config's link of the same example
        t = time.perf_counter()
        linker.link(s.image, s.mention, s.context)
        times.append(time.perf_counter() - t)
        if other is not None:
            t = time.perf_counter()
            other.link(s.image, s.mention, s.context)
            other_times.append(time.perf_counter() - t)
    sequential = sum(times)
    linker.components.description_cache.clear()  # the sequential links described these candidates
    t = time.perf_counter()
    linker.link_many(samples, concurrency=4)
    concurrent = time.perf_counter() - t
    # the same links and model with the micro-batcher limited to one prompt per batch (the old
    # lock's behaviour), measured in this run; fresh description cache so both do the same work
    llm = linker.components.reasoner_llm
    batcher = getattr(llm, "batcher", None)
    unbatched = None
    if batcher is not None:
        rows, batcher.max_rows = batcher.max_rows, 1
        linker.components.description_cache.clear()
        try:
            t = time.perf_counter()
            linker.link_many(samples, concurrency=4)
            unbatched = time.perf_counter() - t
        finally:
            batcher.max_rows = rows
    tokens = [
        c for s in samples[:1] for e in linker.link(s.image, s.mention, s.context).trace for c in e.detail.get("llm_calls", [])
    ]

    table = Table("measure", "value", "goal", title=f"config: {args.config}")
    table.add_row("cold start (process start -> first answer)", f"{cold:.1f} s", "< 15 s")
    table.add_row("warm link, median", f"{statistics.median(times):.2f} s", "< 3 s")
    table.add_row("warm link, max", f"{max(times):.2f} s", "")
    if other is not None:
        table.add_row(f"warm link, median, --compare {args.compare}", f"{statistics.median(other_times):.2f} s", "")
        table.add_row(
            f"warm link speed-up of {args.compare} (median ratio)", f"{statistics.median(times) / statistics.median(other_times):.2f}x", ""
        )
    table.add_row(f"{len(samples)} links sequential", f"{sequential:.1f} s", "baseline")
    table.add_row(f"{len(samples)} links, link_many(concurrency=4)", f"{concurrent:.1f} s", "")
    table.add_row("concurrency 4 speed-up vs sequential", f"{sequential / concurrent:.2f}x", ">= 2.5x")
    if unbatched is not None:
        table.add_row(f"{len(samples)} links, link_many(concurrency=4), LLM batching off", f"{unbatched:.1f} s", "baseline")
        table.add_row("LLM micro-batching speed-up at concurrency 4", f"{unbatched / concurrent:.2f}x", "")
    table.add_row(
        "LLM calls of the first link (prompt + generated tokens)",
        ", ".join(f"{c['prompt_tokens']}+{c['generated_tokens']}" for c in tokens) or "none",
        "",
    )
    console.print(table)


if __name__ == "__main__":
    main()
