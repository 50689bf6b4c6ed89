"""Chat-endpoint throughput and latency against calling `Linker.link` directly, in one run.

    python bench/serve.py [--config default|vllm|PATH] [--requests 8] [--full]

For concurrency 1 and 8: requests/s and p50/p95 latency of `POST /v1/chat/completions` (a real
uvicorn server on loopback, the official openai client, images as data URIs), beside the same
samples linked directly (`Linker.link` at concurrency 1, `link_many` at 8). Printed: the
endpoint's overhead against a direct link (goal: under 5%) and the throughput ratio of
concurrency 8 to 1 (goal with a vLLM reasoner, which batches: at least 1.5x).

By default the linker runs the config's models with the enhancer off and a 12-token chain of
thought, so the bench takes minutes on 2 cores; `--full` keeps the config's budgets.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import uvicorn
from rich.console import Console
from rich.table import Table

from retlink.config import load_config
from retlink.linker import Linker
from retlink.server import ServerSettings, create_app

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
console = Console()


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def run(fn, samples: list[dict], concurrency: int) -> tuple[float, list[float]]:
    """(wall seconds, per-request latencies) of fn over samples at the given concurrency."""
    latencies: list[float] = []

    def one(ex: dict) -> None:
        t = time.perf_counter()
        fn(ex)
        latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, samples))
    return time.perf_counter() - t0, latencies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--full", action="store_true", help="keep the config's enhancer and reasoning budgets")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cfg = load_config(args.config)
    if not args.full:
        cfg = cfg.model_copy(update={"enhancer": cfg.enhancer.model_copy(update={"enabled": False}),
                                     "reasoner": cfg.reasoner.model_copy(update={"max_reasoning_tokens": 12})})
    examples = [json.loads(x) for x in (DEMO / "examples.jsonl").read_text().splitlines() if x.strip()]
    samples = [examples[i % len(examples)] for i in range(args.requests)]
    uris = {e["id"]: "data:image/jpeg;base64," + base64.b64encode((DEMO / e["image"]).read_bytes()).decode()
            for e in examples}

    linker = Linker.from_config(cfg)
    linker.link(DEMO / samples[0]["image"], samples[0]["mention"], samples[0]["context"])  # warm-up

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(linker, ServerSettings(max_concurrent_requests=64)),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=600)

    def direct(ex: dict) -> None:
        linker.link(DEMO / ex["image"], ex["mention"], ex["context"])

    def endpoint(ex: dict) -> None:
        client.chat.completions.create(model="retlink", messages=[{"role": "user", "content": [
            {"type": "text", "text": ex["context"]}, {"type": "image_url", "image_url": {"url": uris[ex["id"]]}}]}])

    table = Table(title=f"chat endpoint vs Linker.link ({args.config}{'' if args.full else ', fast budgets'}, "
                        f"{args.requests} requests)")
    for col in ("path", "concurrency", "req/s", "p50 s", "p95 s"):
        table.add_column(col, justify="right")
    rates: dict[tuple[str, int], float] = {}
    means: dict[tuple[str, int], float] = {}
    try:
        for conc in (1, 8):
            for name, fn in (("Linker.link", direct), ("endpoint", endpoint)):
                wall, lat = run(fn, samples, conc)
                rates[name, conc] = len(samples) / wall
                means[name, conc] = statistics.mean(lat)
                table.add_row(name, str(conc), f"{rates[name, conc]:.3f}", f"{percentile(lat, 0.5):.2f}",
                              f"{percentile(lat, 0.95):.2f}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    console.print(table)
    overhead = means["endpoint", 1] / means["Linker.link", 1] - 1
    console.print(f"endpoint overhead at concurrency 1: {overhead:+.1%} of a direct link (goal < 5%)")
    console.print(f"throughput concurrency 8 / 1: endpoint {rates['endpoint', 8] / rates['endpoint', 1]:.2f}x, "
                  f"direct {rates['Linker.link', 8] / rates['Linker.link', 1]:.2f}x "
                  f"(goal >= 1.5x with a vLLM reasoner)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
