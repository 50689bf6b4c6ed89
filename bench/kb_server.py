"""KB query latency: the embedded store (a folder) against a chroma server (`chroma run` on
127.0.0.1, started here), the same vectors, index settings and queries, measured in one run.

    .venv/bin/python bench/kb_server.py [--entities 10000] [--real 1000] [--queries 200]

Goal (issue 18): server top-10 query p50 under 3x the embedded p50 at 10k entities, with the
same recall@10 against exact search. The vectors are bench/kb.py's (the first `--real` embedded
with MiniLM, the rest mixed from them), the queries real MiniLM embeddings of mention-style
texts; both collections use the KB's HNSW settings (`retlink.tools.kb.store.HNSW`) and are
queried the way `KBStore.query_text` queries them (one vector, 10 results, over HTTP for the
server). The machine is shared and noisy: read the ratio, measured in the same process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO)]

import kb as kb_bench  # noqa: E402  (bench/kb.py: vectors, queries and the latency/recall measure)

from retlink.tools.kb.embedders import shared_text_embedder  # noqa: E402
from retlink.tools.kb.location import ServerKB  # noqa: E402
from retlink.tools.kb.store import HNSW  # noqa: E402
from tests.chroma_server import ChromaServer  # noqa: E402  (the tests' `chroma run` launcher)

console = Console()


def fill(client, vectors) -> tuple[object, float]:
    """A collection of `vectors` with the KB's HNSW settings; (collection, seconds to add)."""
    col = client.create_collection("bench-text", configuration={"hnsw": dict(HNSW)}, embedding_function=None)
    step = min(2000, client.get_max_batch_size())
    started = time.perf_counter()
    for i in range(0, len(vectors), step):
        col.add(ids=[str(j) for j in range(i, min(i + step, len(vectors)))], embeddings=vectors[i : i + step])
    return col, time.perf_counter() - started


def compare(entities: int, real: int, queries: int, seed: int = 0) -> list[tuple[str, float, dict]]:
    """[(store, seconds to add all, measure)] for the embedded store, then the server: the same
    vectors and queries (`bench/scale.py` runs this too)."""
    embedder = shared_text_embedder()
    vectors, texts, _ = kb_bench.make_vectors(entities, min(real, entities), embedder.embed, seed)
    qs = kb_bench.query_vectors(texts, queries, embedder.embed, seed)
    ef = HNSW["ef_search"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="retlink-kb-server-") as tmp:
        embedded_col, embedded_add = fill(kb_bench.chroma_client(Path(tmp) / "embedded"), vectors)
        rows.append(("embedded (folder)", embedded_add, kb_bench.measure(embedded_col, vectors, qs, ef)))
        with ChromaServer(Path(tmp) / "server") as server:
            server_col, server_add = fill(ServerKB(server.url, "bench").client, vectors)
            rows.append((f"chroma server ({server.url})", server_add, kb_bench.measure(server_col, vectors, qs, ef)))
    return rows


def print_comparison(rows: list[tuple[str, float, dict]], entities: int, queries: int) -> float:
    """The table and the goal's verdict; returns server p50 / embedded p50."""
    table = Table(title=f"top-10 query, {entities:,} entities, {queries} queries, ef_search {HNSW['ef_search']}")
    for col in ("store", "add all (s)", "p50 (ms)", "p95 (ms)", "recall@10"):
        table.add_column(col)
    for name, add_s, m in rows:
        table.add_row(name, f"{add_s:.1f}", f"{m['p50']:.2f}", f"{m['p95']:.2f}", f"{m['recall']:.3f}")
    console.print(table)
    ratio = rows[1][2]["p50"] / rows[0][2]["p50"]
    verdict = "[green]meets[/]" if ratio < 3 else "[red]misses[/]"
    console.print(f"server p50 / embedded p50: [bold]{ratio:.2f}x[/] ({verdict} the goal of < 3x)")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--real", type=int, default=1_000, help="entities embedded with MiniLM (the rest mixed)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = compare(args.entities, args.real, args.queries, args.seed)
    print_comparison(rows, args.entities, args.queries)


if __name__ == "__main__":
    main()
