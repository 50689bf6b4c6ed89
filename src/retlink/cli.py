"""The `retlink` command line (typer). User-facing output via rich; errors as one line, exit 2.

    retlink link IMAGE --mention M [--context C] [--json] [--config CFG]
    retlink kb build ENTITIES.jsonl --out DIR
    retlink kb query DIR "text"
    retlink demo
    retlink train CONFIG          (fit the decision head; see src/retlink/train.py)
    retlink data build logos [--out DIR] [--seed N] [--check]
    retlink data corpus logos [--packages FILE]
    retlink serve [--host H] [--port P] [--api-key K] [--keep-alive S] [--attack] [--config CFG]
    retlink eval ... / retlink mate ...   (see src/retlink/eval/cli.py, src/retlink/mate/cli.py)
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from retlink.core.errors import friendly_errors
from retlink.eval.cli import eval_app
from retlink.mate.cli import mate_app

app = typer.Typer(help="Robust multimodal entity linking.", no_args_is_help=True, add_completion=False)
kb_app = typer.Typer(help="Build and query knowledge bases.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(eval_app, name="eval")
app.add_typer(mate_app, name="mate")
data_app = typer.Typer(help="Build benchmark datasets from packaged data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config file or preset name")]
REPO_DEMO = Path(__file__).resolve().parent / "data" / "demo"


def _quiet_libraries() -> None:
    """Third-party progress bars and warnings are noise on a CLI whose output may be JSON."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log progress to stderr")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()


def _print_result(result, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return
    name = result.entity.name if result.entity else "NIL"
    out.print(f"[bold]{result.mention}[/] -> [bold green]{name}[/] ({result.entity_id}), score {result.score:.2f}, by {result.decided_by}")
    out.print(f"  {result.rationale}", highlight=False)
    if result.caption:
        out.print(f"  caption: {result.caption.text}", highlight=False)


@app.command()
@friendly_errors
def link(
    image: Annotated[Path | None, typer.Argument(help="image file (none: link from the text alone)")] = None,
    mention: Annotated[str, typer.Option("--mention", "-m", help="the words that name the entity")] = "",
    context: Annotated[str | None, typer.Option("--context", help="the sentence around the mention")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the LinkResult as JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """Link the entity in IMAGE named by MENTION to the knowledge base (either may be left out:
    an image alone, or a mention and sentence alone, whose trace says captioning and image
    retrieval were skipped)."""
    from retlink.agent.config import load_config
    from retlink.agent.linker import Linker
    from retlink.agent.nodes.validator import check_text
    from retlink.tools.images import load_image

    cfg = load_config(config)  # input errors surface before the slow model load
    check_text(mention, context, cfg.limits, image=image is not None)
    if image is not None:
        load_image(image, max_pixels=cfg.limits.max_pixels, max_bytes=cfg.limits.max_bytes, min_side=cfg.limits.min_side)
    linker = Linker.from_config(cfg)
    _print_result(linker.link(image, mention, context), as_json)


@kb_app.command("build")
@friendly_errors
def kb_build(
    entities: Annotated[Path, typer.Argument(help="entities JSONL (id, name, aliases, description, image_paths)")],
    out_dir: Annotated[
        str, typer.Option("--out", "-o", help="KB folder to create or replace, or http://HOST:PORT/NAME on a chroma server")
    ],
    config: ConfigOpt = None,
    batch_size: Annotated[int, typer.Option(help="entities embedded per batch")] = 64,
) -> None:
    """Build a KB from ENTITIES into a folder or onto a chroma server (resumable; the KB is
    replaced only when complete). A server's auth header comes from the config's kb section."""
    from retlink.agent.config import load_config
    from retlink.tools.kb.build import build_kb
    from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder
    from retlink.tools.kb.location import auth_headers, kb_location

    cfg = load_config(config)
    emb = cfg.embedder
    location = kb_location(out_dir, auth_headers(cfg.kb))
    manifest = build_kb(
        entities,
        location,
        shared_text_embedder(emb.text_model, cfg.device),
        shared_image_embedder(emb.image_backend, emb.open_clip_model, emb.open_clip_pretrained, cfg.device),
        batch_size=batch_size,
    )
    out.print(f"built [bold]{out_dir}[/]: {manifest['count']} entities, {manifest['image_count']} images in {manifest['build_seconds']}s")


@kb_app.command("query")
@friendly_errors
def kb_query(
    kb_dir: Annotated[str, typer.Argument(help="KB folder, or http://HOST:PORT/NAME on a chroma server")],
    text: Annotated[str, typer.Argument(help="query text (a mention, a sentence)")],
    k: Annotated[int, typer.Option("-k", help="results")] = 5,
    config: ConfigOpt = None,
) -> None:
    """Show the entities nearest to TEXT (and exact alias matches)."""
    from retlink.agent.config import load_config
    from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder
    from retlink.tools.kb.location import auth_headers, kb_location
    from retlink.tools.kb.store import KBStore

    cfg = load_config(config)
    emb = cfg.embedder
    store = KBStore(
        kb_location(kb_dir, auth_headers(cfg.kb)),
        shared_text_embedder(emb.text_model, cfg.device),
        shared_image_embedder(emb.image_backend, emb.open_clip_model, emb.open_clip_pretrained, cfg.device),
    )
    table = Table("id", "name", "similarity", "alias match")
    aliases = set(store.aliases.lookup(text))
    hits = store.query_text(text, k)
    for entity, (_, sim) in zip(store.get([i for i, _ in hits]), hits, strict=True):
        table.add_row(entity.id, entity.name, f"{sim:.3f}", "yes" if entity.id in aliases else "")
    out.print(table)


@app.command()
@friendly_errors
def demo(
    config: ConfigOpt = None,
    examples: Annotated[Path, typer.Option(help="examples JSONL")] = REPO_DEMO / "examples.jsonl",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """Build the demo KB if needed and link the bundled examples on the embedded default."""
    from retlink.agent.linker import Linker, Sample

    rows = [json.loads(line) for line in examples.read_text().splitlines() if line.strip()]
    with out.status("loading models and the demo KB (first run builds it)..."):
        linker = Linker.from_config(config)
    samples = [Sample(examples.parent / r["image"], r["mention"], r["context"]) for r in rows]
    results = linker.link_many(samples, concurrency=2, progress=not as_json)
    table = Table("example", "mention", "linked entity", "gold", "score", "by", "ok")
    correct = 0
    for r, res in zip(rows, results, strict=True):
        ok = res.entity_id == r.get("gold")
        correct += ok
        if as_json:
            sys.stdout.write(json.dumps({"id": r["id"], "gold": r.get("gold"), **json.loads(res.model_dump_json(exclude={"trace", "candidates"}))}) + "\n")
        name = res.entity.name if res.entity else "NIL"
        table.add_row(r["id"], r["mention"], name, r.get("gold", ""), f"{res.score:.2f}", res.decided_by, "✓" if ok else "✗")
    if not as_json:
        out.print(table)
        out.print(f"[bold]{correct}/{len(rows)}[/] linked correctly")


@data_app.command("build")
@friendly_errors
def data_build(
    name: Annotated[str, typer.Argument(help="dataset to build: logos")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="dataset folder (default: $RETLINK_CACHE/data/NAME)")] = None,
    seed: Annotated[int, typer.Option(help="random seed: the same seed gives the same files")] = 0,
    samples: Annotated[int, typer.Option(min=1, help="mention samples over all splits")] = 1200,
    distractors: Annotated[int, typer.Option(min=0, help="KB entities that share no mention word")] = 1000,
    limit: Annotated[int | None, typer.Option(min=1, help="use only N mention words (a small subset)")] = None,
    nil_share: Annotated[float, typer.Option(min=0.0, max=0.49, help="share of mention-sharing entities left out of the KB (NIL samples)")] = 0.05,
    check: Annotated[bool, typer.Option("--check", help="fail unless the build matches the committed manifest")] = False,
) -> None:
    """Build a benchmark dataset (MIMIC layout + entities.jsonl + manifest.json) from a package's data."""
    from retlink.core.errors import ConfigError
    from retlink.datasets.build.logos import (
        BUILDERS,
        COMMITTED_MANIFEST,
        committed_view,
        compare_manifests,
    )

    if name not in BUILDERS:
        raise ConfigError(f"unknown dataset builder {name!r}; known: {', '.join(sorted(BUILDERS))}")
    from retlink.core.paths import cache_dir

    target = (out_dir or cache_dir() / "data" / name).expanduser()
    manifest = BUILDERS[name](
        target, seed=seed, samples=samples, distractors=distractors, limit=limit, nil_share=nil_share, console=err
    )
    counts = manifest["counts"]
    out.print(
        f"built [bold]{target}[/] in {manifest['build_seconds']}s: {counts['entities']} KB entities, "
        f"samples {counts['samples']}, sha256 {manifest['digests']['all'][:16]}"
    )
    if check:
        reference = json.loads(COMMITTED_MANIFEST.read_text())
        diffs = compare_manifests(committed_view(manifest), reference)
        if diffs:
            raise ConfigError(f"the build differs from {COMMITTED_MANIFEST}: " + "; ".join(diffs))
        out.print(f"identical to the committed manifest {COMMITTED_MANIFEST.name} (sha256 {reference['digests']['all'][:16]})")


@data_app.command("corpus")
@friendly_errors
def data_corpus(
    name: Annotated[str, typer.Argument(help="benchmark whose search corpus to build: logos")],
    data_dir: Annotated[Path | None, typer.Option("--data", help="the built benchmark folder (default: $RETLINK_CACHE/data/NAME)")] = None,
    packages: Annotated[Path | None, typer.Option(help="a Debian Packages file (default: what `apt-cache dumpavail` prints)")] = None,
    per_entity: Annotated[int, typer.Option(min=1, help="packages kept per KB entity")] = 3,
) -> None:
    """Build the benchmark's local search corpus (corpus.jsonl) from Debian's package index."""
    from retlink.core.errors import ConfigError
    from retlink.core.paths import cache_dir
    from retlink.datasets.build.logos_corpus import CORPUS, build_corpus, read_index

    if name != "logos":
        raise ConfigError(f"no search corpus builder for {name!r}; known: logos")
    target = (data_dir or cache_dir() / "data" / name).expanduser()
    manifest = build_corpus(target, read_index(packages), per_entity=per_entity)
    out.print(
        f"wrote [bold]{target / CORPUS}[/]: {manifest['documents']} documents about "
        f"{manifest['entities_with_documents']} of {manifest['entities']} KB entities "
        f"(index of {manifest['index_packages']} packages, sha256 {manifest['index_sha256'][:16]})"
    )


@app.command()
@friendly_errors
def train(
    config: Annotated[Path, typer.Argument(help="train config YAML (see eval/configs/*-train.yaml)")],
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="first N samples only")] = None,
) -> None:
    """Fit the decision head on a dataset's dev split (links made by the eval runner, resumable)."""
    from retlink.train import train as fit

    path, head = fit(config, limit=limit)
    table = Table(title=f"decision head: {path}")
    table.add_column("metric")
    table.add_column("value")
    for key in ("links", "samples", "left_out", "in_sample", "cross_validated"):
        table.add_row(key, json.dumps(head.metrics.get(key)))
    out.print(table)
    out.print("use it with [bold]decision: {head: " + str(path) + "}[/] in the agent's config")


@app.command()
@friendly_errors
def serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="bind address (loopback unless you set an API key)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    api_key: Annotated[str | None, typer.Option(envvar="RETLINK_API_KEY", help="require this bearer key")] = None,
    max_concurrent: Annotated[int, typer.Option(help="requests in flight before 429")] = 16,
    keep_alive: Annotated[
        float, typer.Option(help="seconds an idle connection stays open (keep it above clients' pool expiry)")
    ] = 75.0,
    attack: Annotated[
        bool, typer.Option(help="enable the web page's Attack panel (POST /v1/attack: FGSM/PGD, rate-limited)")
    ] = False,
) -> None:
    """Serve the agent as an OpenAI-compatible chat endpoint (POST /v1/chat/completions) and the
    web page at / (open http://HOST:PORT/ in a browser)."""
    from retlink.core.config import validate_config
    from retlink.serve.app import ServerSettings
    from retlink.serve.app import serve as run_server

    options = dict(host=host, port=port, api_key=api_key, max_concurrent_requests=max_concurrent,
                   keep_alive_s=keep_alive, attack={"enabled": attack})
    run_server(config, validate_config(ServerSettings, options, "retlink serve"))


if __name__ == "__main__":
    app()
