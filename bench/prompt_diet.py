"""The reasoner's prompt, part by part, and what the prompt diet and the prefix cache save.

Links the demo examples once on the `deep` preset (the embedded default before issue 20's cuts:
the LLM enhancer writes the candidates' descriptions), then renders each link's reasoner prompt
(from its result: caption, candidates with their enhanced descriptions, evidence) under the old
prompt (`deep`'s: `{instructions: last, description_chars: null, evidence_chars: 1200}`) and the
diet (the default `PromptConfig()`), and prints the mean tokens of each part. Then it times the reasoner's
call on those prompts five ways, interleaved in the same run (this machine is shared and noisy,
so only ratios mean something): the old prompt, the new prompt without the prefix cache, the new
prompt with it (`llm.prefix_cache`: the system message prefilled once, then reused), and two
cheaper calls on top: int8 weights (`llm.quantize: int8`) and no chain of thought
(`reasoner.max_reasoning_tokens: 0`, the options scored straight after the prompt).

    .venv/bin/python bench/prompt_diet.py [--n 6] [--rounds 2] [--tokens 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "src" / "retlink" / "data" / "demo"
console = Console()


def part_tokens(llm, parts: list[tuple[str, str]]) -> dict[str, int]:
    """Tokens of each named part (candidates summed), and the whole chat-template prompt."""
    count: dict[str, int] = defaultdict(int)
    for name, text in parts:
        count["candidates" if name in ("candidate", "nil") else name] += len(llm.tokenizer(text, add_special_tokens=False).input_ids)
    return count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6, help="demo examples to link")
    ap.add_argument("--rounds", type=int, default=2, help="timed calls per prompt and variant")
    ap.add_argument("--tokens", type=int, default=16, help="chain-of-thought tokens per timed call")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the LLM")
    args = ap.parse_args()

    from retlink import Linker, Sample
    from retlink.agent.backends import shared_llm
    from retlink.agent.config import load_config
    from retlink.agent.prompts import reasoner_messages, reasoner_parts
    from retlink.core.config import deep_merge
    from retlink.core.schema import PromptConfig
    from retlink.core.types import NIL

    cfg = load_config(deep_merge(load_config("deep").model_dump(mode="json"), {"reasoner": {"llm": {"threads": args.threads}}}))
    rows = [json.loads(x) for x in (DEMO / "examples.jsonl").read_text().splitlines() if x.strip()][: args.n]
    linker = Linker.from_config(cfg)
    results = linker.link_many([Sample(DEMO / r["image"], r["mention"], r["context"]) for r in rows], concurrency=2)
    llm = linker.components.reasoner_llm
    if not hasattr(llm, "tokenizer"):
        raise SystemExit("the bench counts tokens with the in-process model: reasoner.llm.backend must be transformers")
    prompts = {"old": cfg.reasoner.prompt, "new": PromptConfig()}  # cfg is deep's

    inputs = []
    for r, res in zip(rows, results, strict=True):
        cands = res.candidates[: cfg.reasoner.max_candidates]
        inputs.append(((res.mention, r["context"], res.caption, cands, res.evidence), [c.entity.id for c in cands] + [NIL]))
    counts: dict[str, dict[str, list[int]]] = {k: defaultdict(list) for k in prompts}
    for args_, _ in inputs:
        for k, p in prompts.items():
            for name, n in part_tokens(llm, reasoner_parts(*args_, prompt=p)).items():
                counts[k][name].append(n)
            counts[k]["prompt (chat template)"].append(len(llm._prompt_ids(reasoner_messages(*args_, prompt=p))))
            counts[k]["cached prefix"].append(llm._row(reasoner_messages(*args_, prompt=p), 0).prefix)

    table = Table("part (mean tokens)", "old prompt", "new prompt (the default)")
    names = list(dict.fromkeys([*counts["old"], *counts["new"]]))
    for name in names:
        table.add_row(name, *(f"{statistics.mean(counts[k][name]) if counts[k][name] else 0:.1f}" for k in prompts))
    console.print(table)

    timed: dict[str, list[float]] = defaultdict(list)
    int8 = shared_llm(cfg.reasoner.llm.model_copy(update={"quantize": "int8"}))
    # (label, prompt, prefix cache, model, chain-of-thought tokens)
    variants = [
        ("old prompt", "old", False, llm, args.tokens),
        ("new prompt, no prefix cache", "new", False, llm, args.tokens),
        ("new prompt, prefix cache", "new", True, llm, args.tokens),
        ("new prompt, prefix cache, int8 weights", "new", True, int8, args.tokens),
        ("new prompt, prefix cache, no chain of thought", "new", True, llm, 0),
    ]
    # both shared models are restored after timing: another user of the process keeps its setting
    cache_before = {id(m): (m, m.prefix_cache) for m in (llm, int8)}
    try:
        for _, k, cache, model, _ in variants:  # untimed: the prefix cache's one prefill per text, and warm-up
            model.prefix_cache = cache
            model.choose(reasoner_messages(*inputs[0][0], prompt=prompts[k]), inputs[0][1], max_reasoning_tokens=1)
        for _ in range(args.rounds):
            for args_, options in inputs:
                for label, k, cache, model, tokens in variants:  # interleaved: the machine's load hits all alike
                    model.prefix_cache = cache
                    messages = reasoner_messages(*args_, prompt=prompts[k])
                    t = time.perf_counter()
                    model.choose(messages, options, max_reasoning_tokens=tokens)
                    timed[label].append(time.perf_counter() - t)
    finally:
        for model, cache in cache_before.values():
            model.prefix_cache = cache
    base = statistics.median(timed["old prompt"])
    table = Table("reasoner call", "median s", "ratio to the old prompt")
    for label, *_ in variants:
        m = statistics.median(timed[label])
        table.add_row(f"{label} ({len(timed[label])} calls)", f"{m:.2f}", f"{base / m:.2f}x")
    nocache = statistics.median(timed["new prompt, no prefix cache"])
    table.add_row("prefix cache vs no cache (new prompt)", "", f"{nocache / statistics.median(timed['new prompt, prefix cache']):.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
