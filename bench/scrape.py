"""Benchmark: fetch-and-extract of N pages from a loopback server that delays every response.

Runs the real scraper (SSRF guard, limits, trafilatura in worker threads) twice in the same
process against the same server: once at concurrency 1 (the sequential baseline) and once at
the configured concurrency, and reports the speed-up as a ratio (goal: >= 6x at concurrency 8
with 32 pages and 200 ms per response). Then measures extraction alone, in pages per second,
on the same pages without the network.

    .venv/bin/python bench/scrape.py [--pages 32] [--delay 0.2] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from rich.console import Console
from rich.table import Table

from retlink.core.schema import SearchConfig
from retlink.tools.scrape import build_scraper
from retlink.tools.scrape.extract import extract_page
from retlink.tools.scrape.fetch import RawPage

log = logging.getLogger("bench.scrape")

_WORDS = [
    "tower",
    "bridge",
    "river",
    "club",
    "city",
    "museum",
    "painter",
    "engine",
    "island",
    "festival",
    "league",
    "station",
    "portrait",
    "century",
    "architect",
    "novel",
    "harbour",
    "cathedral",
    "orchestra",
    "mountain",
    "library",
    "garden",
]


def make_page(i: int) -> bytes:
    """A deterministic article page of realistic shape: boilerplate around ~8 paragraphs."""
    rng = random.Random(i)
    paras = "".join(
        "<p>" + " ".join(rng.choice(_WORDS) for _ in range(70)).capitalize() + ".</p>" for _ in range(8)
    )
    nav = "".join(f'<li><a href="/section/{k}">Section {k}</a></li>' for k in range(40))
    scripts = "<script>" + "var t=[];" * 400 + "</script>"
    return (
        f"<!DOCTYPE html><html><head><title>Article {i}</title>"
        f'<meta property="article:published_time" content="2024-01-{1 + i % 28:02d}">{scripts}</head>'
        f"<body><header><nav><ul>{nav}</ul></nav></header><div class='cookie'>We use cookies.</div>"
        f"<main><article><h1>Article {i}</h1>{paras}</article></main>"
        f"<footer>Copyright. Privacy. Terms.</footer>{scripts}</body></html>"
    ).encode()


class _DelayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    pages: ClassVar[dict[str, bytes]] = {}
    delay_s = 0.2

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle plus the client's
        # delayed ACK would add ~40 ms to every response, which real servers do not.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        time.sleep(self.delay_s)
        body = self.pages.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class DelayServer(ThreadingHTTPServer):
    daemon_threads = True


async def run_scrape(cfg: SearchConfig, urls: list[str]) -> tuple[float, int]:
    """Seconds to fetch and extract all urls with a fresh scraper, and pages that succeeded."""
    scraper = build_scraper(cfg)
    t0 = time.perf_counter()
    outcomes = await scraper.fetch_many(urls)
    seconds = time.perf_counter() - t0
    await scraper.aclose()
    failed = [o for o in outcomes if isinstance(o, Exception)]
    for f in failed:
        log.warning("failed: %s", f)
    return seconds, len(urls) - len(failed)


def bench_extraction(bodies: list[bytes], rounds: int) -> float:
    """Pages per second of extract_page alone (one thread)."""
    raws = [
        RawPage(
            url=f"http://b/{i}",
            final_url=f"http://b/{i}",
            status=200,
            content_type="text/html",
            charset="utf-8",
            body=b,
        )
        for i, b in enumerate(bodies)
    ]
    extract_page(raws[0])  # warm-up: trafilatura builds its caches on first use
    t0 = time.perf_counter()
    for _ in range(rounds):
        for raw in raws:
            assert extract_page(raw) is not None
    return rounds * len(raws) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=32)
    ap.add_argument("--delay", type=float, default=0.2, help="server delay per response, seconds")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--extract-rounds", type=int, default=3)
    ap.add_argument("--goal", type=float, default=6.0, help="speed-up the parallel run should reach")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    bodies = [make_page(i) for i in range(args.pages)]
    _DelayHandler.pages = {f"/page/{i}": b for i, b in enumerate(bodies)}
    _DelayHandler.delay_s = args.delay
    server = DelayServer(("127.0.0.1", 0), _DelayHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    urls = [f"http://127.0.0.1:{port}/page/{i}" for i in range(args.pages)]

    def cfg(concurrency: int) -> SearchConfig:
        return SearchConfig(
            allow_hosts=[f"127.0.0.1:{port}"],
            max_concurrency=concurrency,
            per_host_concurrency=concurrency,
            cache_dir=None,
            min_text_chars=100,
        )

    try:
        seq_s, seq_ok = asyncio.run(run_scrape(cfg(1), urls))
        par_s, par_ok = asyncio.run(run_scrape(cfg(args.concurrency), urls))
    finally:
        server.shutdown()
        server.server_close()
    extract_pps = bench_extraction(bodies, args.extract_rounds)

    ratio = seq_s / par_s
    console = Console()
    table = Table(
        title=f"fetch + extract of {args.pages} loopback pages, {args.delay * 1000:.0f} ms server delay each"
    )
    for col in ("run", "concurrency", "pages ok", "seconds", "pages/s"):
        table.add_column(col, justify="right")
    table.add_row(
        "sequential (baseline)", "1", f"{seq_ok}/{args.pages}", f"{seq_s:.2f}", f"{args.pages / seq_s:.1f}"
    )
    table.add_row(
        "parallel",
        str(args.concurrency),
        f"{par_ok}/{args.pages}",
        f"{par_s:.2f}",
        f"{args.pages / par_s:.1f}",
    )
    console.print(table)
    ideal = min(args.concurrency, args.pages)
    verdict = "[green]meets[/]" if ratio >= args.goal else "[red]misses[/]"
    console.print(
        f"speed-up parallel / sequential: [bold]{ratio:.2f}x[/] (ideal {ideal}x; goal {args.goal:g}x: {verdict})"
    )
    avg_kb = sum(map(len, bodies)) / len(bodies) / 1024
    console.print(
        f"extraction alone (trafilatura, 1 thread): [bold]{extract_pps:.0f} pages/s[/] at {avg_kb:.0f} KB a page"
    )


if __name__ == "__main__":
    main()
