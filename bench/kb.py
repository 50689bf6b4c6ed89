"""KB benchmark: build time per 1,000 entities, top-10 query latency and recall@10 at scale.

    .venv/bin/python bench/kb.py            # 10k, 50k, 110k entities (WikiMEL's KB: 109,976)
    .venv/bin/python bench/kb.py --quick    # 2k, 5k, 10k

Goals (issue 8): p50 < 20 ms at 110k with recall@10 >= 0.95 against exact search in the same
run, build memory < 4 GB, latency growing sub-linearly with KB size.

Entities are synthetic but textual: names, types, places, dates and occupations composed into
encyclopedia-style descriptions. The first `--real` of them (10,000 by default) are embedded
with the project's MiniLM, which also gives the embedding cost per 1,000. Embedding 110k texts
on 2 cores takes many minutes, so the rest are made cheaply *from* the real ones: each is a
random convex mix of two real vectors (weight 0.55-0.85 on the first) plus Gaussian noise of
norm ~0.15, renormalised. That keeps the clustered, anisotropic geometry of real sentence
embeddings (which random unit vectors lack: an HNSW index over random unit vectors gave recall 0.10)
while every vector stays distinct. Queries are real MiniLM embeddings of mention-style texts.

Collections use `retlink.tools.kb.store.HNSW` (the KB's settings, cosine space); `ef_search`
is swept at the largest size. Recall@10 is the overlap of chromadb's top 10 with numpy's exact
top 10 over the same vectors. Memory is the process's peak RSS (chromadb's index lives in it).
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from retlink.tools.kb.embedders import shared_text_embedder
from retlink.tools.kb.store import HNSW, chroma_client

console = Console()

FIRST = [
    "Al",
    "Bre",
    "Cor",
    "Da",
    "El",
    "Fa",
    "Gio",
    "Ha",
    "Ili",
    "Jo",
    "Ka",
    "Lu",
    "Ma",
    "Nor",
    "Os",
    "Pe",
    "Ra",
    "Sa",
    "Te",
    "Vi",
]
LAST = [
    "bert",
    "dan",
    "ric",
    "mond",
    "vik",
    "sen",
    "rano",
    "lotti",
    "wicz",
    "berg",
    "ford",
    "ley",
    "ton",
    "ski",
    "mann",
    "ard",
]
PLACES = [
    "Lyon",
    "Osaka",
    "Quito",
    "Lagos",
    "Perth",
    "Bergen",
    "Tucson",
    "Kraków",
    "Porto",
    "Hanoi",
    "Cork",
    "Dakar",
    "Leeds",
    "Graz",
]
KINDS = {
    "person": [
        "painter",
        "footballer",
        "physicist",
        "politician",
        "novelist",
        "jazz pianist",
        "architect",
        "cyclist",
    ],
    "film": ["drama film", "documentary", "animated film", "thriller", "silent comedy short"],
    "band": ["rock band", "string quartet", "hip hop group", "folk duo"],
    "company": ["airline", "software company", "brewery", "shipbuilder", "bank"],
    "place": ["river", "mountain", "village", "lake", "island", "railway station"],
}


def entity_text(rng: random.Random, i: int) -> tuple[str, str]:
    """(name, description) of synthetic entity i."""
    kind = rng.choice(sorted(KINDS))
    role = rng.choice(KINDS[kind])
    name = f"{rng.choice(FIRST)}{rng.choice(LAST)}" + (
        f" {rng.choice(FIRST)}{rng.choice(LAST)}" if kind == "person" else ""
    )
    place, year = rng.choice(PLACES), rng.randint(1820, 2020)
    if kind == "person":
        desc = f"{name} (born {year} in {place}) is a {role} known for work in {rng.choice(PLACES)}."
    elif kind == "place":
        desc = f"{name} is a {role} near {place}, first recorded in {year}."
    else:
        desc = f"{name} is a {role} from {place}, founded or released in {year}."
    return f"{name} #{i}", desc


def make_vectors(n_total: int, n_real: int, embed, seed: int) -> tuple[np.ndarray, list[str], float]:
    """(vectors, texts of the real ones, embedding seconds per 1,000 texts)."""
    rng = random.Random(seed)
    texts = [" ".join(entity_text(rng, i)) for i in range(n_real)]
    started = time.perf_counter()
    real = np.concatenate([embed(texts[i : i + 512]) for i in range(0, n_real, 512)]).astype(np.float32)
    per_1000 = (time.perf_counter() - started) / n_real * 1000
    n_mix = n_total - n_real
    if n_mix <= 0:
        return real[:n_total], texts, per_1000
    g = np.random.default_rng(seed)
    a, b = g.integers(0, n_real, n_mix), g.integers(0, n_real, n_mix)
    w = g.uniform(0.55, 0.85, (n_mix, 1)).astype(np.float32)
    noise = g.normal(0, 0.15 / np.sqrt(real.shape[1]), (n_mix, real.shape[1])).astype(np.float32)
    mixed = w * real[a] + (1 - w) * real[b] + noise
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    return np.concatenate([real, mixed]), texts, per_1000


def query_vectors(texts: list[str], n: int, embed, seed: int) -> np.ndarray:
    """Mention-style queries about random real entities: the name, or name + part of the text."""
    rng = random.Random(seed + 1)
    queries = []
    for t in rng.sample(texts, min(n, len(texts))):
        words = t.split()
        queries.append(" ".join(words[: rng.randint(2, max(3, len(words) // 2))]))
    return embed(queries).astype(np.float32)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(col, vectors: np.ndarray, queries: np.ndarray, ef: int) -> dict:
    col.modify(configuration={"hnsw": {"ef_search": ef}})
    for q in queries[:10]:  # warm-up
        col.query(query_embeddings=[q], n_results=10, include=[])
    exact = np.argpartition(-(queries @ vectors.T), 10, axis=1)[:, :10]
    lat, recall = [], []
    for q, truth in zip(queries, exact, strict=True):
        t = time.perf_counter()
        res = col.query(query_embeddings=[q], n_results=10, include=[])
        lat.append((time.perf_counter() - t) * 1000)
        got = {int(i) for i in res["ids"][0]}
        recall.append(len(got & {int(i) for i in truth}) / 10)
    return {
        "ef": ef,
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "recall": float(np.mean(recall)),
    }


def build(workdir: Path, vectors: np.ndarray, name: str):
    client = chroma_client(workdir / name)
    col = client.create_collection(name, configuration={"hnsw": dict(HNSW)}, embedding_function=None)
    step = min(5000, client.get_max_batch_size())
    started = time.perf_counter()
    for i in range(0, len(vectors), step):
        col.add(ids=[str(j) for j in range(i, min(i + step, len(vectors)))], embeddings=vectors[i : i + step])
    return col, time.perf_counter() - started


def pipeline_per_1000(workdir: Path, texts: list[str], embedder) -> float:
    """Seconds per 1,000 entities through the real `build_kb` (text side, MiniLM + index + aliases)."""
    from retlink.core.types import Entity
    from retlink.tools.kb.build import build_kb

    n = min(1000, len(texts))
    entities = (
        Entity(id=f"e{i}", name=t.split(" is ")[0][:80] or f"e{i}", description=t)
        for i, t in enumerate(texts[:n])
    )
    manifest = build_kb(entities, workdir / "pipeline-kb", embedder, None, batch_size=128, progress=False)
    return manifest["build_seconds"] / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2k, 5k, 10k entities")
    ap.add_argument("--sizes", type=int, nargs="*")
    ap.add_argument("--real", type=int, help="entities embedded with MiniLM (the rest are mixed from them)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--ef",
        type=int,
        nargs="*",
        default=[32, 64, 128, 256],
        help="ef_search values swept at the largest size",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = args.sizes or ([2_000, 5_000, 10_000] if args.quick else [10_000, 50_000, 110_000])
    n_real = min(args.real or (2_000 if args.quick else 10_000), max(sizes))
    embedder = shared_text_embedder()
    workdir = Path(tempfile.mkdtemp(prefix="retlink-bench-kb-"))
    try:
        with console.status(f"embedding {n_real:,} entity texts with MiniLM"):
            vectors, texts, embed_1000 = make_vectors(max(sizes), n_real, embedder.embed, args.seed)
            queries = query_vectors(texts, args.queries, embedder.embed, args.seed)
            pipe_1000 = pipeline_per_1000(workdir, texts, embedder)
        rows = []
        for n in sizes:
            with console.status(f"indexing {n:,} entities"):
                col, seconds = build(workdir, vectors[:n], f"bench{n}")
            efs = args.ef if n == max(sizes) else [HNSW["ef_search"]]
            for ef in efs:
                rows.append(
                    {
                        "n": n,
                        "index_1000": seconds / n * 1000,
                        "rss": peak_rss_mb(),
                        **measure(col, vectors[:n], queries, ef),
                    }
                )
            console.log(f"{n:,} entities indexed in {seconds:.1f} s")
        report(rows, embed_1000, pipe_1000, n_real, sizes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(rows: list[dict], embed_1000: float, pipe_1000: float, n_real: int, sizes: list[int]) -> None:
    table = Table(title=f"KB index ({HNSW}), {n_real:,} real MiniLM vectors, the rest mixed from them")
    for col in (
        "entities",
        "ef_search",
        "index s/1k",
        "build s/1k",
        "p50 ms",
        "p95 ms",
        "recall@10",
        "peak RSS MB",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"{r['n']:,}",
            str(r["ef"]),
            f"{r['index_1000']:.2f}",
            f"{r['index_1000'] + embed_1000:.2f}",
            f"{r['p50']:.2f}",
            f"{r['p95']:.2f}",
            f"{r['recall']:.3f}",
            f"{r['rss']:.0f}",
        )
    console.print(table)
    console.print(
        f"MiniLM embedding: {embed_1000:.2f} s per 1,000 texts; full build_kb (text side): {pipe_1000:.2f} s per 1,000"
    )
    default = [r for r in rows if r["ef"] == HNSW["ef_search"]]
    small, large = default[0], default[-1]
    growth = (large["p50"] / small["p50"]) / (large["n"] / small["n"])
    console.print(
        f"latency growth {small['n']:,} -> {large['n']:,}: p50 x{large['p50'] / small['p50']:.2f} for size "
        f"x{large['n'] / small['n']:.1f} (ratio {growth:.2f}; < 1 is sub-linear)"
    )
    ok = large["p50"] < 20 and large["recall"] >= 0.95 and max(r["rss"] for r in rows) < 4096 and growth < 1
    verdict = "[green]meets" if ok else "[red]misses"
    console.print(
        f"{verdict}[/] the goals at {large['n']:,} (p50 < 20 ms, recall@10 >= 0.95, RSS < 4 GB, sub-linear)"
    )


if __name__ == "__main__":
    main()
