"""The `retlink` command line (typer). User-facing output via rich; errors as one line, exit 2.

    retlink link IMAGE --mention M [--context C] [--json] [--config CFG]
    retlink kb build ENTITIES.jsonl --out DIR
    retlink kb query DIR "text"
    retlink demo
    retlink train CONFIG          (fit the decision head, or kind: encoder; see src/retlink/train/)
    retlink data build logos|icons [--out DIR] [--seed N] [--sources DIR] [--check]
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

import click
import typer
from rich.console import Console
from rich.table import Table

from retlink.core.errors import friendly_errors
from retlink.core.terminal import for_terminal, markup_safe
from retlink.eval.cli import eval_app
from retlink.mate.cli import mate_app

#: the most results `kb query -k` shows (chroma refuses k < 1 with a traceback)
MAX_QUERY_K = 1000
#: the most entities `kb build --batch-size` embeds at once
MAX_BATCH_SIZE = 4096

err = Console(stderr=True)


class OneLineTyper(typer.Typer):
    """A Typer app whose command-line errors are one line and exit code 2, like retlink's own.

    Click's usage errors (a bad option value, an out-of-range number, a missing argument) are
    otherwise a usage block or a rich panel of several lines. Only the console entry point
    goes through `__call__`; `CliRunner` tests call the click command and see click's output."""

    def __call__(self, *args, **kwargs):
        if kwargs.get("standalone_mode", True) is False:
            return super().__call__(*args, **kwargs)
        try:
            code = super().__call__(*args, standalone_mode=False, **kwargs)
        except click.ClickException as e:  # UsageError, BadParameter, NoSuchOption, ...
            err.print(f"[bold red]error:[/] {markup_safe(' '.join(e.format_message().split()))}", highlight=False, soft_wrap=True)
            sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
        except click.Abort:
            err.print("[bold red]aborted[/]", highlight=False)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = OneLineTyper(help="Robust multimodal entity linking.", no_args_is_help=True, add_completion=False)
kb_app = typer.Typer(help="Build and query knowledge bases.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(eval_app, name="eval")
app.add_typer(mate_app, name="mate")
data_app = typer.Typer(help="Build benchmark datasets from packaged data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console()

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
    # every string here is the user's, the KB's or a model's: escaped, so none can drive the terminal
    name = markup_safe(result.entity.name) if result.entity else "NIL"
    out.print(
        f"[bold]{markup_safe(result.mention)}[/] -> [bold green]{name}[/] ({markup_safe(str(result.entity_id))}), "
        f"score {result.score:.2f}, by {markup_safe(str(result.decided_by))}",
        highlight=False,
    )
    out.print(f"  {for_terminal(result.rationale)}", highlight=False, markup=False)
    if result.caption:
        out.print(f"  caption: {for_terminal(result.caption.text)}", highlight=False, markup=False)


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
    from retlink.agent.nodes.validator import check_text, check_unicode
    from retlink.tools.images import load_image

    check_unicode(mention, "mention")  # input errors surface before the slow model load
    if context is not None:
        check_unicode(context, "context")
    cfg = load_config(config)
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
    from retlink.core.errors import ConfigError
    from retlink.tools.kb.location import auth_headers, kb_location

    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"--batch-size must be 1 to {MAX_BATCH_SIZE}, not {batch_size}")
    cfg = load_config(config)
    emb = cfg.embedder
    location = kb_location(out_dir, auth_headers(cfg.kb))
    location.check_target()  # an unusable --out is refused before torch and the models load
    from retlink.tools.kb.build import build_kb
    from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder

    manifest = build_kb(
        entities,
        location,
        shared_text_embedder(emb.text_model, cfg.device),
        shared_image_embedder(emb.image_backend, emb.open_clip_model, emb.open_clip_pretrained, cfg.device, emb.image_weights),
        batch_size=batch_size,
    )
    out.print(f"built [bold]{markup_safe(str(location))}[/]: {manifest['count']} entities, {manifest['image_count']} images in {manifest['build_seconds']}s")


@kb_app.command("query")
@friendly_errors
def kb_query(
    kb_dir: Annotated[str, typer.Argument(help="KB folder, or http://HOST:PORT/NAME on a chroma server")],
    text: Annotated[str, typer.Argument(help="query text (a mention, a sentence)")],
    k: Annotated[int, typer.Option("-k", help="results")] = 5,
    config: ConfigOpt = None,
) -> None:
    """Show the entities nearest to TEXT (and exact alias matches)."""
    from retlink.core.errors import ConfigError

    if not 1 <= k <= MAX_QUERY_K:  # before the imports below load torch: a typo answers at once
        raise ConfigError(f"-k must be 1 to {MAX_QUERY_K}, not {k}")
    from retlink.agent.config import load_config
    from retlink.agent.nodes.validator import check_unicode
    from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder
    from retlink.tools.kb.location import auth_headers, kb_location
    from retlink.tools.kb.store import KBStore

    check_unicode(text, "query text")
    cfg = load_config(config)
    emb = cfg.embedder
    store = KBStore(
        kb_location(kb_dir, auth_headers(cfg.kb)),
        shared_text_embedder(emb.text_model, cfg.device),
        shared_image_embedder(emb.image_backend, emb.open_clip_model, emb.open_clip_pretrained, cfg.device, emb.image_weights),
    )
    table = Table("id", "name", "similarity", "alias match")
    aliases = set(store.aliases.lookup(text))
    hits = store.query_text(text, k)
    for entity, (_, sim) in zip(store.get([i for i, _ in hits]), hits, strict=True):
        table.add_row(markup_safe(entity.id), markup_safe(entity.name), f"{sim:.3f}", "yes" if entity.id in aliases else "")
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
    name: Annotated[str, typer.Argument(help="dataset to build: logos or icons")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="dataset folder (default: $RETLINK_CACHE/data/NAME)")] = None,
    seed: Annotated[int, typer.Option(help="random seed: the same seed gives the same files")] = 0,
    samples: Annotated[int, typer.Option(min=1, help="mention samples over all splits")] = 1200,
    distractors: Annotated[int | None, typer.Option(min=0, help="KB entities that share no mention word (default: logos 1000, icons 100)")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="use only N mention words (a small subset)")] = None,
    nil_share: Annotated[float, typer.Option(min=0.0, max=0.49, help="share of mention-sharing entities left out of the KB (NIL samples)")] = 0.05,
    sources: Annotated[Path | None, typer.Option(help="icons: the folder of Iconify sets (default: $RETLINK_CACHE/npm/iconify, filled by `make icons-sources`)")] = None,
    check: Annotated[bool, typer.Option("--check", help="fail unless the build matches the committed manifest")] = False,
) -> None:
    """Build a benchmark dataset (MIMIC layout + entities.jsonl + manifest.json) from a package's data."""
    from retlink.core.errors import ConfigError
    from retlink.core.paths import cache_dir
    from retlink.datasets.build import icons, logos
    from retlink.datasets.build.common import committed_view, compare_manifests

    builders = {"logos": logos, "icons": icons}
    if name not in builders:
        raise ConfigError(f"unknown dataset builder {name!r}; known: {', '.join(sorted(builders))}")
    options: dict = {"seed": seed, "samples": samples, "limit": limit, "nil_share": nil_share}
    if distractors is not None:
        options["distractors"] = distractors
    if sources is not None:
        if name != "icons":
            raise ConfigError(f"--sources is for the icons benchmark; {name} is built from its Python package")
        options["sources"] = sources
    target = (out_dir or cache_dir() / "data" / name).expanduser()
    manifest = builders[name].build(target, console=err, **options)
    counts = manifest["counts"]
    out.print(
        f"built [bold]{markup_safe(str(target))}[/] in {manifest['build_seconds']}s: {counts['entities']} KB entities, "
        f"samples {counts['samples']}, sha256 {manifest['digests']['all'][:16]}"
    )
    if check:
        committed = builders[name].COMMITTED_MANIFEST
        if not committed.is_file():
            raise ConfigError(f"no committed manifest for {name} ({committed}) to check the build against")
        reference = json.loads(committed.read_text())
        diffs = compare_manifests(committed_view(manifest), reference)
        if diffs:
            raise ConfigError(f"the build differs from {committed}: " + "; ".join(diffs))
        out.print(f"identical to the committed manifest {committed.name} (sha256 {reference['digests']['all'][:16]})")


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
    config: Annotated[Path, typer.Argument(help="train config YAML (see src/retlink/eval/configs/train/)")],
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="first N samples only")] = None,
) -> None:
    """Fit the decision head on a dataset's dev split (links made by the eval runner, resumable),
    or, for a config with `kind: encoder`, adversarially fine-tune the image embedder (FARE, MAT)."""
    from retlink.core.errors import ConfigError
    from retlink.train import config_kind
    from retlink.train import train as fit

    if config_kind(config) == "encoder":
        from retlink.train.encoder import train_encoder

        if limit is not None:
            raise ConfigError("--limit is for the decision head; an encoder config has `limit:`")
        done = train_encoder(config, console=err)
        table = Table(title=f"image weights: {done['path']}")
        table.add_column("")
        table.add_column("value")
        for key in ("weights_sha256", "updates", "images", "first_loss", "last_loss", "seconds"):
            table.add_row(key, json.dumps(done[key]))
        out.print(table)
        out.print("use them with [bold]embedder: {image_weights: " + done["path"] + "}[/] (rebuild the KB with that config)")
        return
    path, head = fit(config, limit=limit)
    table = Table(title=f"decision head: {path}")
    table.add_column("metric")
    table.add_column("value")
    for key in ("links", "samples", "left_out", "l2", "prior", "in_sample", "cross_validated"):
        table.add_row(key, json.dumps(head.metrics.get(key)))
    out.print(table)
    out.print("use it with [bold]decision: {head: " + str(path) + "}[/] in the agent's config")


@app.command()
@friendly_errors
def serve(
    config: ConfigOpt = None,
    host: Annotated[
        str, typer.Option(help="bind address; any but loopback serves whoever can reach it, so set --api-key "
                               "(without one the server starts anyway and logs a warning)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 1 to 65535")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="RETLINK_API_KEY", help="require this bearer key (non-empty, printable "
                                                                "ASCII without spaces); default: no key")
    ] = None,
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
    from retlink.serve.launcher import serve as run_server
    from retlink.serve.launcher import server_settings

    options = dict(host=host, port=port, api_key=api_key, max_concurrent_requests=max_concurrent,
                   keep_alive_s=keep_alive, attack={"enabled": attack})
    run_server(config, server_settings(options))


if __name__ == "__main__":
    app()
