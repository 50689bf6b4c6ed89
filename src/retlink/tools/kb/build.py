"""Build a KB from an entities JSONL file (one `Entity` per line) or a dataset loader, into a
folder or onto a chroma server (`location.py`).

Safe to interrupt and to re-run: the build writes into a partial KB (`<out>.partial/`, or the
server's `NAME.partial-*` collections), upserts by entity id (re-running adds nothing twice and
skips what is already embedded), and only at the end writes the manifest and swaps the partial
KB into place, so `<out>` is never half-written. Entities stream through in batches; memory
stays bounded by the batch size.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from retlink.core.errors import DatasetError, InvalidImageError
from retlink.core.types import Entity
from retlink.tools.images import load_image
from retlink.tools.kb.embedders import ImageEmbedder, TextEmbedder
from retlink.tools.kb.location import Aliases, KBLocation, kb_location
from retlink.tools.kb.store import _entity_metadata

log = logging.getLogger(__name__)


def read_entities(path: Path) -> Iterator[Entity]:
    """Stream entities from JSONL; a malformed line raises DatasetError naming file and line."""
    for _, entity in _numbered_entities(Path(path)):
        yield entity


def _numbered_entities(path: Path) -> Iterator[tuple[int, Entity]]:
    """(file line, 1-based, entity) pairs. Each line is parsed as JSON first, so an error names
    the file's line and the column in it, never the line inside a one-line JSON document."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise DatasetError(f"entities file not found: {path}") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{lineno}: an entity must be a JSON object, got {type(record).__name__}")
            try:
                yield lineno, Entity.model_validate(record)
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "entity"
                raise DatasetError(f"{path}:{lineno}: invalid entity ({where}: {first['msg']})") from None


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


def is_current(kb: Path | str | KBLocation, entities: Path) -> bool:
    """True when the KB (a folder, a `kb_location` or a server address) is complete and was
    built from this exact entities file."""
    data = kb_location(kb).read_manifest()
    if data is None or data.get("status") != "complete" or data.get("source_sha256") != file_digest(entities):
        return False
    source = data.get("source")
    if source and source != "<iterable>" and not Path(source).exists():
        # the KB resolves relative image paths against its source's folder; a KB shared through
        # the cache outlives the checkout it was built from, and its images would be unreadable
        log.info("the KB at %s was built from %s, which is gone: rebuilding from %s", kb, source, entities)
        return False
    return True


@contextlib.contextmanager
def build_lock(out: Path | str | KBLocation) -> Iterator[None]:
    """Hold the build lock of the KB at `out` (an exclusive flock on its `lock_path()`: the
    sibling `<out>.lock` of a folder; a file under the cache for a KB on a server).

    Two processes that build one KB at once (two `retlink serve`, two test runs sharing
    `$RETLINK_CACHE/demo-kb`) would write the same partial KB and swap it under each other;
    with the lock the second waits, then finds the KB current (see `ensure_built`). For a KB on a
    server the lock covers the processes of this machine only: builds from several machines at
    once are not coordinated."""
    location = kb_location(out)
    location.check_target()  # before the lock file: an unusable --out is refused, nothing made
    lock = location.lock_path()
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_built(
    entities: Path,
    out: Path | str | KBLocation,
    text_embedder: TextEmbedder,
    image_embedder: ImageEmbedder | None,
    *,
    progress: bool = False,
) -> bool:
    """Build the KB at `out` from `entities` unless it is current; True when it was built.
    Safe when several processes start at once: one builds, the others wait and reuse its KB."""
    location = kb_location(out)
    if is_current(location, entities):
        return False
    with build_lock(location):
        if is_current(location, entities):  # built by another process while this one waited
            return False
        log.info("building the KB at %s from %s", location, entities)
        _build_kb(entities, location, text_embedder, image_embedder, progress=progress)
        return True


def build_kb(
    entities_path: Path | Iterable[Entity],
    out: Path | str | KBLocation,
    text_embedder: TextEmbedder,
    image_embedder: ImageEmbedder | None,
    *,
    batch_size: int = 64,
    progress: bool = True,
    base_dir: Path | None = None,
    total: int | None = None,
) -> dict:
    """Build (or resume building) the KB at `out` (a folder, a `kb_location`, or a chroma
    server address `http://HOST:PORT/NAME`), under its build lock; returns the manifest.

    `entities_path` is an entities JSONL file or any iterable of entities (a dataset loader's
    `entities()`, streamed: nothing holds the whole KB). Relative image paths resolve against
    `base_dir` (default: the JSONL file's folder, or the working directory for an iterable).
    `total` only sizes the progress bar of an iterable.
    """
    location = kb_location(out)
    with build_lock(location):
        return _build_kb(entities_path, location, text_embedder, image_embedder, batch_size=batch_size,
                         progress=progress, base_dir=base_dir, total=total)


def _build_kb(
    entities_path: Path | Iterable[Entity],
    location: KBLocation,
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
        numbered: Iterable[tuple[int, Entity]] = _numbered_entities(source_path)
        base_dir = Path(base_dir) if base_dir is not None else source_path.parent
        total = _count_lines(source_path)
        source = str(source_path.resolve())
        source_sha = file_digest(source_path)  # before reading: what the build is of
    else:
        source_path, numbered = None, enumerate(entities_path, 1)
        base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        source, source_sha = "<iterable>", None
    resumed = _open_partial(
        location,
        {
            "source_sha256": source_sha,
            "text_model": text_embedder.name,
            "image_model": image_embedder.name if image_embedder is not None else None,
        },
    )
    text_col, image_col, aliases = location.open(text_embedder, partial=True)
    stats = {"entities": 0, "skipped_existing": 0, "images": 0, "missing_images": 0}
    seen: dict[str, int] = {}  # id -> line (a few MB at 110k), to refuse duplicates in the source
    started = time.perf_counter()

    def flush(batch: list[Entity], bar_advance) -> None:
        # Resuming skips only entities stored exactly as the source has them now; one stored
        # differently (an iterable source changed between runs) loses its old images and
        # aliases and is embedded again, so the KB never holds an old version.
        got = text_col.get(ids=[e.id for e in batch], include=["metadatas"])
        stored = {i: (m or {}).get("entity_json") for i, m in zip(got["ids"], got["metadatas"], strict=True)}
        todo = [e for e in batch if stored.get(e.id) != e.model_dump_json()]
        stats["skipped_existing"] += len(batch) - len(todo)
        changed = [e.id for e in todo if e.id in stored]
        if changed:
            _forget(changed, image_col, aliases, text_col=None)
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
    try:
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("build", total=total, rate="")

            def advance(n: int) -> None:
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.update(task, advance=n, rate=f"{stats['entities'] / elapsed:7.1f} entities/s")

            batch: list[Entity] = []
            place = "line {}".format if source_path is not None else "entity #{}".format
            for where, entity in numbered:
                if entity.id in seen:
                    raise DatasetError(
                        f"{source_path or source}: {place(where)}: duplicate entity id {entity.id!r} "
                        f"(first at {place(seen[entity.id])})"
                    )
                seen[entity.id] = where
                batch.append(entity)
                if len(batch) >= batch_size:
                    flush(batch, advance)
                    batch = []
            if batch:
                flush(batch, advance)
        if resumed:  # entities of the earlier run that this source no longer has
            stale = sorted(set(text_col.get(include=[])["ids"]) - seen.keys())
            if stale:
                log.warning("resumed build: removing %d entities the source no longer has", len(stale))
                _forget(stale, image_col, aliases, text_col=text_col)
    except BaseException:
        aliases.close()
        raise

    seconds = time.perf_counter() - started
    manifest = {
        "status": "complete",
        "source": source,
        "source_sha256": source_sha,
        "count": text_col.count(),
        "image_count": image_col.count(),
        "text_model": text_embedder.name,
        "image_model": image_embedder.name if image_embedder is not None else None,
        # fine-tuned image weights (`embedder.image_weights`): their fingerprint and hash; the
        # `@hash` in image_model is what a load checks, this says how they were made
        "image_weights": getattr(image_embedder, "weights_info", None),
        "build_seconds": round(seconds, 2),
        "entities_per_second": round(stats["entities"] / max(seconds, 1e-9), 1),
        **stats,
    }
    aliases.close()
    location.finish(manifest)
    log.info(
        "built KB at %s: %d entities, %d images in %.1fs (%.1f entities/s)",
        location,
        manifest["count"],
        manifest["image_count"],
        seconds,
        manifest["entities_per_second"],
    )
    return manifest


def _open_partial(location: KBLocation, identity: dict) -> bool:
    """Reuse the location's partial KB only for the same build; True when one is resumed.

    An unfinished build is resumed only for the same source (sha256; an iterable has none) and
    the same embedders, recorded when it started. Anything else (another file, a changed file,
    other embedders, a partial KB from before the record existed) is discarded with a warning:
    resuming it would mix two sources' entities or two models' vectors in one KB.
    """
    if location.partial_exists():
        previous = location.partial_identity()
        if previous == identity:
            log.info("resuming the unfinished build of %s", location)
            location.set_partial_identity(identity)
            return True
        why = (
            "it records no source"
            if not isinstance(previous, dict)
            else "its " + ", ".join(k for k in identity if previous.get(k) != identity[k]) + " differ"
        )
        log.warning("discarding the unfinished build of %s (%s): starting over", location, why)
        location.discard_partial()
    location.set_partial_identity(identity)
    return False


def _forget(ids: list[str], image_col, aliases: Aliases, *, text_col) -> None:
    """Remove entities' images and aliases (and their text vectors when `text_col` is given)."""
    for i in range(0, len(ids), 1000):
        chunk = ids[i : i + 1000]
        image_col.delete(where={"entity_id": {"$in": chunk}})
        aliases.remove(chunk)
        if text_col is not None:
            text_col.delete(ids=chunk)


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
