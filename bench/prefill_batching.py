"""What batching buys the in-process LLM's prefill on this machine: the ceiling on what
concurrent links can gain when the LLM's work is a prefill (the embedded default: no chain of
thought, the options scored after the prompt).

The same `--batch` prompts of `--tokens` tokens each (real demo-sized text, cut to length, so
the rows need no padding) are prefilled one prompt at a time and then as one batch, alternated
for `--rounds` rounds in one process, and the batch's prompt tokens per second are printed as a
ratio to one-at-a-time's (this machine is shared and noisy: only the ratio means something).
Decoding one token a step reads every weight once per step, so batching decode pays; a prefill
is already a large matrix product per layer, so a ratio near 1 says concurrent prefills can
only take turns, and a link that is mostly prefill can gain from concurrency at most what its
other steps overlap.

    .venv/bin/python bench/prefill_batching.py [--batch 4] [--tokens 600] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
console = Console()


def prompts(tokenizer, batch: int, tokens: int) -> torch.Tensor:
    """`batch` different prompts of exactly `tokens` tokens, from the demo corpus's text."""
    text = " ".join((REPO / "src" / "retlink" / "data" / "demo" / "corpus.jsonl").read_text().split())
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) < batch * tokens:
        raise SystemExit(f"the demo corpus has {len(ids)} tokens, fewer than --batch x --tokens")
    return torch.tensor([ids[k * tokens : (k + 1) * tokens] for k in range(batch)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4, help="prompts (the concurrency compared)")
    ap.add_argument("--tokens", type=int, default=600, help="tokens per prompt")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from retlink.tools.llm.smollm2 import ensure_float_copy

    if args.threads:
        torch.set_num_threads(args.threads)
    path = ensure_float_copy()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = prompts(tokenizer, args.batch, args.tokens)

    def one_at_a_time() -> float:
        t = time.perf_counter()
        for row in ids:
            model(input_ids=row[None], use_cache=True)
        return time.perf_counter() - t

    def batched() -> float:
        t = time.perf_counter()
        model(input_ids=ids, use_cache=True)
        return time.perf_counter() - t

    times: dict[str, list[float]] = {"one at a time": [], "one batch": []}
    with torch.inference_mode():
        one_at_a_time(), batched()  # warm-up, untimed
        for _ in range(args.rounds):
            times["one at a time"].append(one_at_a_time())
            times["one batch"].append(batched())
    total = args.batch * args.tokens
    table = Table("prefill", "median seconds", "prompt tokens / s", "vs one at a time",
                  title=f"{args.batch} prompts x {args.tokens} tokens, {args.rounds} rounds, torch threads {torch.get_num_threads()}")
    base = statistics.median(times["one at a time"])
    for name, ts in times.items():
        m = statistics.median(ts)
        table.add_row(name, f"{m:.2f}", f"{total / m:.0f}", f"{base / m:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
