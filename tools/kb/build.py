"""Build a KB folder from an entities JSONL file (one `Entity` per line) or a dataset loader.

Safe to interrupt and to re-run: the build writes into `<out>.partial/`, upserts by entity id
(re-running adds nothing twice and skips what is already embedded), and only at the end
writes the manifest and swaps the folder into place, so `<out>` is never half-written.
Entities stream through in batches; memory stays bounded by the batch size.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from retlink.errors import DatasetError, InvalidImageError
from retlink.tools.images import load_image
from retlink.tools.kb.embedders import ImageEmbedder, TextEmbedder
from retlink.tools.kb.store import MANIFEST, AliasTable, _entity_metadata, chroma_client, open_collections
from retlink.types import Entity

log = logging.getLogger(__name__)


def read_entities(path: Path) -> Iterator[Entity]:
    """Stream entities from JSONL; a malformed line raises DatasetError naming file and line."""
    try:
        fh = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"entities file not found: {path}") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield Entity.model_validate_json(line)
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "line"
                raise DatasetError(f"{path}:{lineno}: invalid entity ({where}: {first['msg']})") from None
            except UnicodeDecodeError as e:
                raise DatasetError(f"{path}:{lineno}: not UTF-8 ({e})") from None


def file_digest(path: Path) -> str:
    """sha256 of a file, streamed (tells whether a KB is stale)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def is_current(kb_path: Path, entities: Path) -> bool:
    """True when the KB at `kb_path` is complete and was built from this exact entities file."""
    manifest = Path(kb_path) / MANIFEST
    if not manifest.exists():
        return False
    data = json.loads(manifest.read_text())
    return data.get("status") == "complete" and data.get("source_sha256") == file_digest(entities)


@contextlib.contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """Hold the build lock of the KB at `out` (an exclusive flock on the sibling `<out>.lock`).

    Two processes that build one KB at once (two `retlink serve`, two test runs sharing
    `$RETLINK_CACHE/demo-kb`) would write the same `.partial` folder and swap it under each other;
    with the lock the second waits, then finds the KB current (see `ensure_built`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_built(
    entities: Path, out: Path, text_embedder: TextEmbedder, image_embedder: ImageEmbedder | None, *, progress: bool = False
) -> bool:
    """Build the KB at `out` from `entities` unless it is current; True when it was built.
    Safe when several processes start at once: one builds, the others wait and reuse its KB."""
    if is_current(out, entities):
        return False
    with build_lock(out):
        if is_current(out, entities):  # built by another process while this one waited
            return False
        log.info("building the KB at %s from %s", out, entities)
        _build_kb(entities, Path(out), text_embedder, image_embedder, progress=progress)
        return True


def build_kb(
    entities_path: Path | Iterable[Entity],
    out: Path,
    text_embedder: TextEmbedder,
    image_embedder: ImageEmbedder | None,
    *,
    batch_size: int = 64,
    progress: bool = True,
    base_dir: Path | None = None,
    total: int | None = None,
) -> dict:
    """Build (or resume building) the KB at `out`, under its build lock; returns the manifest.

    `entities_path` is an entities JSONL file or any iterable of entities (a dataset loader's
    `entities()`, streamed: nothing holds the whole KB). Relative image paths resolve against
    `base_dir` (default: the JSONL file's folder, or the working directory for an iterable).
    `total` only sizes the progress bar of an iterable.
    """
    with build_lock(Path(out)):
        return _build_kb(entities_path, Path(out), text_embedder, image_embedder, batch_size=batch_size,
                         progress=progress, base_dir=base_dir, total=total)


def _build_kb(
    entities_path: Path | Iterable[Entity],
    out: Path,
    text_embedder: TextEmbedder,
    image_embedder: ImageEmbedder | None,
    *,
    batch_size: int = 64,
    progress: bool = True,
    base_dir: Path | None = None,
    total: int | None = None,
) -> dict:
    """`build_kb` without the lock (the caller holds it)."""
    if isinstance(entities_path, str | Path):
        source_path: Path | None = Path(entities_path)
        if not source_path.is_file():
            raise DatasetError(f"entities file not found: {source_path}")
        entities: Iterable[Entity] = read_entities(source_path)
        base_dir = Path(base_dir) if base_dir is not None else source_path.parent
        total = _count_lines(source_path)
        source = str(source_path.resolve())
    else:
        source_path, entities = None, entities_path
        base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        source = "<iterable>"
    work = out.with_name(out.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    client = chroma_client(work / "chroma")
    text_col, image_col = open_collections(client, text_embedder)
    aliases = AliasTable(work / "aliases.sqlite")
    stats = {"entities": 0, "skipped_existing": 0, "images": 0, "missing_images": 0}
    seen: set[str] = set()  # ids only (a few MB at 110k), to refuse duplicates in the source
    started = time.perf_counter()

    def flush(batch: list[Entity], bar_advance) -> None:
        existing = set(text_col.get(ids=[e.id for e in batch], include=[])["ids"])
        todo = [e for e in batch if e.id not in existing]
        stats["skipped_existing"] += len(batch) - len(todo)
        if todo:
            # The text vector is written last: it marks the entity as done. An interruption
            # before it leaves images/aliases that the resumed run rewrites (upsert, INSERT OR
            # IGNORE), never an entity whose images were skipped.
            if image_embedder is not None:
                _add_images(todo, image_col, image_embedder, base_dir, stats)
            aliases.add(todo)
            vecs = text_embedder.embed([e.text() for e in todo])
            text_col.upsert(
                ids=[e.id for e in todo],
                embeddings=list(vecs),
                documents=[e.text() for e in todo],
                metadatas=[_entity_metadata(e) for e in todo],
            )
        stats["entities"] += len(batch)
        bar_advance(len(batch))

    columns = (
        TextColumn("[bold]kb build"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("build", total=total, rate="")

        def advance(n: int) -> None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=n, rate=f"{stats['entities'] / elapsed:7.1f} entities/s")

        batch: list[Entity] = []
        for entity in entities:
            if entity.id in seen:
                raise DatasetError(f"{source_path or source}: duplicate entity id {entity.id!r}")
            seen.add(entity.id)
            batch.append(entity)
            if len(batch) >= batch_size:
                flush(batch, advance)
                batch = []
        if batch:
            flush(batch, advance)

    seconds = time.perf_counter() - started
    manifest = {
        "status": "complete",
        "source": source,
        "source_sha256": file_digest(source_path) if source_path is not None else None,
        "count": text_col.count(),
        "image_count": image_col.count(),
        "text_model": text_embedder.name,
        "image_model": image_embedder.name if image_embedder is not None else None,
        "build_seconds": round(seconds, 2),
        "entities_per_second": round(stats["entities"] / max(seconds, 1e-9), 1),
        **stats,
    }
    aliases.close()
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient.clear_system_cache()
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2))
    _swap_into_place(work, out)
    log.info(
        "built KB at %s: %d entities, %d images in %.1fs (%.1f entities/s)",
        out,
        manifest["count"],
        manifest["image_count"],
        seconds,
        manifest["entities_per_second"],
    )
    return manifest


def _add_images(batch: list[Entity], image_col, embedder: ImageEmbedder, base_dir: Path, stats: dict) -> None:
    ids, images, metas = [], [], []
    for e in batch:
        for i, rel in enumerate(e.image_paths):
            path = Path(rel) if Path(rel).is_absolute() else base_dir / rel
            try:
                images.append(load_image(path))
            except InvalidImageError as err:
                stats["missing_images"] += 1
                log.warning("entity %s: skipping image %s (%s)", e.id, rel, err)
                continue
            ids.append(f"{e.id}#img{i}")
            metas.append({"entity_id": e.id, "path": str(rel)})
    if ids:
        image_col.upsert(ids=ids, embeddings=list(embedder.embed_images(images)), metadatas=metas)
        stats["images"] += len(ids)


def _swap_into_place(work: Path, out: Path) -> None:
    """Replace `out` by the finished `work` folder with renames only (never half a KB at `out`)."""
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    work.rename(out)
    if old.exists():
        shutil.rmtree(old)
