"""Chat-endpoint throughput and latency against calling `Linker.link` directly, interleaved.

    python bench/serve.py [--config default|vllm|PATH] [--requests 8] [--rounds 2] [--full]

Two paths over the same linker and samples: `Linker.link` called directly, and
`POST /v1/chat/completions` (a real uvicorn server on loopback, the official openai client,
images as data URIs). On a shared 2-core box the machine's speed drifts by more than the
overhead being measured, so the paths are never run as two blocks; they alternate:
- concurrency 1: per sample, one direct link and one request, back to back, the order flipped
  every sample (AB BA AB ...), so both a linear drift and a "second run is warmer" effect cancel;
  the overhead is the ratio of the two paths' summed latencies (and the median per-pair ratio);
- concurrency 8: `--rounds` rounds of one direct batch and one endpoint batch of `--requests`
  samples each (8 threads per batch, same order flip), throughput from the summed walls.
Printed: req/s and p50/p95 per path and concurrency, the endpoint/direct ratio (goal: overhead
under 5%), the throughput ratio of concurrency 8 to 1 (goal with a vLLM reasoner, which batches:
at least 1.5x), whether both paths linked every sample to the same entity, and the load average
before and after, so a number taken on a busy machine says so.

The web page (`--page`, needs Debian's chromium and chromedriver: `make browser`): the page's
first contentful paint in headless Chromium (median of 5 loads, the browser's own
`performance` timing), and the attack round trip: `POST /v1/attack` (PGD, 10 steps, 8/255) from
the client against the same attack made in-process (`make_attack`), interleaved, as a ratio.

By default the linker runs the config's models with the enhancer off and at most a 12-token
chain of thought (the default has none), so the bench takes minutes on 2 cores; `--full` keeps
the config's budgets. With
`--config vllm` the reasoner is the vLLM server of `scripts/vllm.sh start` (127.0.0.1:8011).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import openai
import uvicorn
from rich.console import Console
from rich.table import Table

from retlink.agent.config import load_config
from retlink.agent.linker import Linker
from retlink.serve.app import AttackSettings, ServerSettings, create_app, uvicorn_config

DEMO = Path(__file__).resolve().parents[1] / "src" / "retlink" / "data" / "demo"
console = Console()
PATHS = ("Linker.link", "endpoint")


@dataclass
class Tally:
    """What one path did at one concurrency, summed over its interleaved runs."""

    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    answers: dict[int, str] = field(default_factory=dict)

    def rate(self) -> float:
        return len(self.latencies) / self.wall_s if self.wall_s else 0.0


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def batch(fn: Callable[[dict], str], samples: list[tuple[int, dict]], concurrency: int, tally: Tally) -> None:
    """Run fn over samples at the given concurrency; add walls, latencies and answers to tally."""

    def one(item: tuple[int, dict]) -> None:
        i, ex = item
        t = time.perf_counter()
        answer = fn(ex)
        tally.latencies.append(time.perf_counter() - t)
        tally.answers[i] = answer

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, samples))
    tally.wall_s += time.perf_counter() - t0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def page_bench(url: str, image_uri: str, linker: Linker, loads: int = 5, attacks: int = 3) -> None:
    """The page's first contentful paint, and the attack round trip against the in-process attack."""
    import httpx
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from retlink.serve.attack import AttackRequest, make_attack
    from retlink.serve.inputs import decode_data_uri
    from retlink.tools.images import load_image

    os.environ.setdefault("SE_OFFLINE", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    paints = []
    try:
        for _ in range(loads):
            drv.get("about:blank")
            drv.get(url + "/")
            paints.append(drv.execute_script(
                "return new Promise(r => { const f = () => { const e = performance.getEntriesByName("
                "'first-contentful-paint')[0]; e ? r(e.startTime) : setTimeout(f, 20); }; f(); })"))
    finally:
        drv.quit()
    console.print(f"page first contentful paint: median {statistics.median(paints):.0f} ms "
                  f"(range {min(paints):.0f}-{max(paints):.0f} ms, {loads} loads)")
    req = AttackRequest(image=image_uri, attack="pgd", eps=8, steps=10)
    settings = AttackSettings(enabled=True, per_minute=1000)
    pil = load_image(decode_data_uri(image_uri, settings.max_image_bytes))
    kb = getattr(linker.components, "kb", None)
    make_attack(pil, req, settings, kb)  # warm-up
    walls: dict[str, list[float]] = {"in-process": [], "endpoint": []}
    for k in range(attacks):  # AB BA AB
        for name in ("in-process", "endpoint") if k % 2 == 0 else ("endpoint", "in-process"):
            t = time.perf_counter()
            if name == "endpoint":
                httpx.post(f"{url}/v1/attack", json=req.model_dump(), timeout=600).raise_for_status()
            else:
                make_attack(pil, req, settings, kb)
            walls[name].append(time.perf_counter() - t)
    ratio = sum(walls["endpoint"]) / sum(walls["in-process"])
    console.print(f"attack round trip (PGD 10 steps): endpoint median {statistics.median(walls['endpoint']):.2f} s, "
                  f"in-process {statistics.median(walls['in-process']):.2f} s, ratio {ratio:.3f}x ({attacks} each)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default", help="preset name (default, vllm, ...) or YAML path")
    ap.add_argument("--requests", type=int, default=8, help="samples per path per run")
    ap.add_argument("--rounds", type=int, default=2, help="direct/endpoint batch pairs at concurrency 8")
    ap.add_argument("--full", action="store_true", help="keep the config's enhancer and reasoning budgets")
    ap.add_argument("--page", action="store_true", help="also the page's first paint and the attack round trip")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cfg = load_config(args.config)
    if not args.full:
        cfg = cfg.model_copy(update={"enhancer": cfg.enhancer.model_copy(update={"enabled": False}),
                                     "reasoner": cfg.reasoner.model_copy(update={"max_reasoning_tokens": min(cfg.reasoner.max_reasoning_tokens, 12)})})
    examples = [json.loads(x) for x in (DEMO / "examples.jsonl").read_text().splitlines() if x.strip()]
    samples = list(enumerate(examples[i % len(examples)] for i in range(args.requests)))
    uris = {e["id"]: "data:image/jpeg;base64," + base64.b64encode((DEMO / e["image"]).read_bytes()).decode()
            for e in examples}
    load_before = load()

    linker = Linker.from_config(cfg)
    first = samples[0][1]
    linker.link(DEMO / first["image"], first["mention"], first["context"])  # warm-up

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ServerSettings(port=port, max_concurrent_requests=64,
                              attack=AttackSettings(enabled=args.page, per_minute=1000))
    server = uvicorn.Server(uvicorn_config(create_app(linker, settings), settings, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=600)

    def direct(ex: dict) -> str:
        return linker.link(DEMO / ex["image"], ex["mention"], ex["context"]).entity_id or "NIL"

    def endpoint(ex: dict) -> str:
        resp = client.chat.completions.create(model="retlink", messages=[{"role": "user", "content": [
            {"type": "text", "text": ex["context"]}, {"type": "image_url", "image_url": {"url": uris[ex["id"]]}}]}])
        return ((resp.model_extra or {})["retlink"]["entity"] or {}).get("id", "NIL")

    fns = dict(zip(PATHS, (direct, endpoint), strict=True))
    tallies = {(name, conc): Tally() for name in PATHS for conc in (1, 8)}
    pair_ratios: list[float] = []
    try:
        if args.page:
            page_bench(f"http://127.0.0.1:{port}", uris[first["id"]], linker)
        for k, item in enumerate(samples):  # concurrency 1: AB BA AB ... per sample
            order = PATHS if k % 2 == 0 else PATHS[::-1]
            for name in order:
                batch(fns[name], [item], 1, tallies[name, 1])
            pair_ratios.append(tallies["endpoint", 1].latencies[-1] / tallies["Linker.link", 1].latencies[-1])
        for r in range(args.rounds):  # concurrency 8: AB BA ... per round
            for name in PATHS if r % 2 == 0 else PATHS[::-1]:
                batch(fns[name], samples, 8, tallies[name, 8])
    finally:
        server.should_exit = True
        thread.join(timeout=30)

    table = Table(title=f"chat endpoint vs Linker.link, interleaved ({args.config}"
                        f"{'' if args.full else ', fast budgets'}, {args.requests} requests, {args.rounds} rounds at 8)")
    for col in ("path", "concurrency", "links", "req/s", "p50 s", "p95 s"):
        table.add_column(col, justify="right")
    for conc in (1, 8):
        for name in PATHS:
            t = tallies[name, conc]
            table.add_row(name, str(conc), str(len(t.latencies)), f"{t.rate():.3f}",
                          f"{percentile(t.latencies, 0.5):.2f}", f"{percentile(t.latencies, 0.95):.2f}")
    console.print(table)
    ratio = sum(tallies["endpoint", 1].latencies) / sum(tallies["Linker.link", 1].latencies)
    console.print(f"endpoint / direct at concurrency 1: {ratio:.3f}x (overhead {ratio - 1:+.1%}; goal < 5%); "
                  f"median per-pair ratio {statistics.median(pair_ratios):.3f}x, "
                  f"range {min(pair_ratios):.3f}-{max(pair_ratios):.3f}")
    ratio8 = tallies["Linker.link", 8].rate() / tallies["endpoint", 8].rate()
    console.print(f"endpoint / direct wall at concurrency 8: {ratio8:.3f}x (overhead {ratio8 - 1:+.1%})")
    console.print(f"throughput concurrency 8 / 1: endpoint {tallies['endpoint', 8].rate() / tallies['endpoint', 1].rate():.2f}x, "
                  f"direct {tallies['Linker.link', 8].rate() / tallies['Linker.link', 1].rate():.2f}x "
                  f"(goal >= 1.5x with a vLLM reasoner)")
    for conc in (1, 8):
        a, b = tallies["Linker.link", conc].answers, tallies["endpoint", conc].answers
        diff = [i for i in a if a[i] != b.get(i)]
        console.print(f"same entity on both paths at concurrency {conc}: {len(a) - len(diff)}/{len(a)}"
                      + (f" (differ: samples {diff})" if diff else ""))
    console.print(f"machine: {load_before} before, {load()} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
