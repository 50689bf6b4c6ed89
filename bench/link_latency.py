"""Latency of a config (the embedded default unless `--config`): cold start, warm link, and
link_many at concurrency 4.

The goals are issue 20's, on 2 quiet cores. Cold start is measured in a fresh subprocess
(process start to first answer, demo KB already built). Warm latency and the concurrency ratio are measured in this process on the demo
examples. This machine is shared and noisy, so the concurrency result is printed as a ratio to
sequential linking measured in the same run, and the LLM micro-batcher's gain as a ratio to the
same concurrent links with batching off (one prompt per batch, as behind the old lock).
`--compare CFG` links the same examples with a second config (a path or a preset name, e.g.
`deep`), interleaved link by link with --config's warm links so the load hits both alike,
and prints its warm median as a ratio to --config's.

`--cold-ab REF` measures only the cold start, of this checkout against the code of git REF (e.g.
`main`), each in fresh processes taken in turn (REF, this, REF, this, ...; `--pairs` of them), and
prints the parts of each start (imports, `Linker.from_config`, first link) and the ratio of the
medians. REF's code is unpacked (`git archive`) into a temporary folder laid out as the installed
package, with this checkout's `data/`; both run with `python -P`, so neither sees the other's code.

    .venv/bin/python bench/link_latency.py [--n 6] [--config CFG] [--compare CFG]
    .venv/bin/python bench/link_latency.py --cold-ab main [--pairs 5] [--config CFG]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "src" / "retlink" / "data" / "demo"
console = Console()

COLD = """
import time, sys
t0 = float(sys.argv[1])
t = time.time()
from retlink import Linker
t_import = time.time()
linker = Linker.from_config(sys.argv[2])
t_build = time.time()
r = linker.link("src/retlink/data/demo/images/coffee.jpg", "Java", "A fresh cup of [Java] on the saucer.")
t_link = time.time()
import retlink.agent.nodes
print(t_link - t0, r.entity_id, t - t0, t_import - t, t_build - t_import, t_link - t_build, retlink.agent.nodes.__file__)
"""
#: the parts of a cold start COLD prints after the total and the answer
COLD_PARTS = ("interpreter", "import retlink.Linker", "Linker.from_config", "first link")
#: what cold_parts adds after them
CPU = "CPU seconds (user + system, whole process)"


def cold_parts(config: str, root: Path | None = None) -> tuple[float, str, list[float]]:
    """(seconds from process start to the first answer, the answer, COLD_PARTS' seconds and last
    the process's CPU seconds, user + system, to its exit) of a fresh process; with `root`, the
    retlink package there instead of this checkout's. CPU seconds are less noisy than wall
    seconds on a shared machine when work is removed (not when work is moved to idle cores)."""
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = str(root)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-P", "-c", COLD, str(t0), config], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    fields = out.stdout.strip().splitlines()[-1].split()
    expected = (root or REPO).resolve()
    if not Path(fields[-1]).resolve().is_relative_to(expected):
        raise RuntimeError(f"the cold start ran {fields[-1]}, not the code under {expected}")
    return float(fields[0]), fields[1], [float(x) for x in fields[2:-1]] + [cpu]


def unpack_ref(ref: str, into: Path) -> Path:
    """REF's package (its `src/` folder, data and presets included) unpacked under INTO; the
    returned folder goes first on PYTHONPATH. Refs from before the src/ layout are not supported."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def cold_ab(ref: str, config: str, pairs: int) -> None:
    """Cold starts of REF and of this checkout, alternated, with the ratio of their medians."""
    with tempfile.TemporaryDirectory(prefix="retlink-cold-") as tmp:
        base = unpack_ref(ref, Path(tmp))
        cold_parts(config, base), cold_parts(config)  # once each, untimed: page cache, KB check
        runs: dict[str, list[tuple[float, str, list[float]]]] = {ref: [], "this": []}
        for i in range(pairs):
            for name, root in ((ref, base), ("this", None)) if i % 2 == 0 else (("this", None), (ref, base)):
                runs[name].append(cold_parts(config, root))
                total, answer, parts = runs[name][-1]
                console.print(f"pair {i + 1}: {name:>8} {total:6.2f} s  {answer}  " + "  ".join(f"{p:.2f}" for p in parts))
    table = Table("cold start", *(f"{ref} median", "this median"), title=f"config {config}: {pairs} pairs, alternated")
    table.add_row("total (process start -> first answer)", *(f"{statistics.median(r[0] for r in runs[k]):.2f} s" for k in runs))
    for j, part in enumerate((*COLD_PARTS, CPU)):
        table.add_row(f"  {part}" if j < len(COLD_PARTS) else part, *(f"{statistics.median(r[2][j] for r in runs[k]):.2f} s" for k in runs))
    table.add_row("answers", *(", ".join(sorted({r[1] for r in runs[k]})) for k in runs))
    console.print(table)
    for label, value in (("wall", lambda r: r[0]), ("CPU", lambda r: r[2][-1])):
        medians = [statistics.median(value(r) for r in runs[k]) for k in runs]
        per_pair = statistics.median(value(b) / value(a) for a, b in zip(runs[ref], runs["this"], strict=True))
        console.print(f"{label} this / {ref}: {medians[1] / medians[0]:.3f} (ratio of medians), {per_pair:.3f} (median of per-pair ratios)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6, help="demo examples to link")
    ap.add_argument("--config", default="default", help="the config timed (path or preset)")
    ap.add_argument("--compare", default=None, help="a second config (path or preset) timed against --config")
    ap.add_argument("--cold-ab", default=None, metavar="REF", help="only the cold start, against git REF's code (alternated)")
    ap.add_argument("--pairs", type=int, default=5, help="cold starts of each side with --cold-ab")
    args = ap.parse_args()
    if args.cold_ab:
        cold_ab(args.cold_ab, args.config, args.pairs)
        return

    from retlink import Linker, Sample

    rows = [json.loads(x) for x in (DEMO / "examples.jsonl").read_text().splitlines() if x.strip()][: args.n]
    samples = [Sample(DEMO / r["image"], r["mention"], r["context"]) for r in rows]
    linker = Linker.from_config(args.config)
    linker.link(samples[0].image, samples[0].mention, samples[0].context)  # warm up (and build the KB)

    other = None
    if args.compare:
        other = Linker.from_config(args.compare)
        other.link(samples[0].image, samples[0].mention, samples[0].context)  # warm up

    cold = cold_parts(args.config)[0]
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
