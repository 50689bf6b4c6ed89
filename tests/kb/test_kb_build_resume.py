"""Building a KB from a dataset loader: interrupted builds resume without adding anything twice,
`<out>` is never touched before the build completes, and a failure between the image and the
text write of a batch cannot leave an entity without its images."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from retlink.core.errors import DatasetError
from retlink.core.types import Entity
from retlink.datasets import load_dataset
from retlink.tools.kb.build import build_kb, ensure_built, is_current
from retlink.tools.kb.store import KBStore
from tests.conftest import REPO

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"


class Interrupted(RuntimeError):
    pass


def interrupt_after(entities: Iterator[Entity], n: int) -> Iterator[Entity]:
    for i, e in enumerate(entities):
        if i == n:
            raise Interrupted(f"stopped after {n} entities")
        yield e


def alias_rows(kb: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(kb / "aliases.sqlite")
    try:
        return con.execute("SELECT norm, entity_id FROM alias").fetchall()
    finally:
        con.close()


def test_interrupted_build_resumes_without_duplicates(tmp_path, text_embedder, image_embedder):
    demo = load_dataset("demo")
    all_ids = [e.id for e in demo.entities()]
    n_images = sum(len(e.image_paths) for e in demo.entities())
    out = tmp_path / "kb"

    # an older complete KB sits at <out>: the interrupted rebuild must not touch it
    build_kb(list(demo.entities())[:3], out, text_embedder, image_embedder, progress=False)
    before = json.loads((out / "manifest.json").read_text())
    assert before["count"] == 3

    with pytest.raises(Interrupted):
        build_kb(
            interrupt_after(demo.entities(), 20),
            out,
            text_embedder,
            image_embedder,
            batch_size=8,
            progress=False,
        )
    assert json.loads((out / "manifest.json").read_text()) == before
    partial = tmp_path / "kb.partial"
    assert partial.is_dir() and not (partial / "manifest.json").exists()

    manifest = build_kb(demo.entities(), out, text_embedder, image_embedder, batch_size=8, progress=False)
    assert manifest["skipped_existing"] == 16  # two full batches of 8 were done before the stop
    assert manifest["count"] == len(all_ids) == 39
    assert manifest["image_count"] == n_images
    assert not partial.exists()
    rows = alias_rows(out)
    assert len(rows) == len(set(rows))
    kb = KBStore(out, text_embedder, image_embedder)
    assert sorted(e.id for e in kb.get(all_ids)) == sorted(all_ids)
    assert "chelsea_cat" in kb.aliases.lookup("Chelsea")

    again = build_kb(demo.entities(), out, text_embedder, image_embedder, batch_size=8, progress=False)
    assert (again["count"], again["image_count"]) == (39, n_images)
    assert again["entities_per_second"] > 0


class FailingOnce:
    """The real image embedder, failing on its n-th call (a crash between the image and the
    text write of a batch)."""

    def __init__(self, inner, fail_on: int) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, 0
        self.name, self.dim = inner.name, inner.dim

    def embed_images(self, images):
        self.calls += 1
        if self.calls == self.fail_on:
            raise Interrupted("image embedder died")
        return self.inner.embed_images(images)


def test_crash_inside_a_batch_never_loses_images(tmp_path, text_embedder, image_embedder):
    demo = load_dataset("demo")
    with_images = {e.id for e in demo.entities() if e.image_paths}
    out = tmp_path / "kb"
    with pytest.raises(Interrupted):
        build_kb(
            demo.entities(), out, text_embedder, FailingOnce(image_embedder, 2), batch_size=8, progress=False
        )
    build_kb(demo.entities(), out, text_embedder, image_embedder, batch_size=8, progress=False)
    kb = KBStore(out, text_embedder, image_embedder)
    probe = image_embedder.embed_images([Image.new("RGB", (32, 32))])[0]
    assert set(kb.image_similarity(probe, sorted(with_images))) == with_images


def test_build_from_a_published_format_loader(tmp_path, text_embedder, image_embedder):
    ds = load_dataset("wikimel", FIXTURES / "wikimel")
    manifest = build_kb(ds.entities(), tmp_path / "kb", text_embedder, image_embedder, progress=False)
    assert (manifest["count"], manifest["image_count"], manifest["source"]) == (3, 3, "<iterable>")
    kb = KBStore(tmp_path / "kb", text_embedder, image_embedder)
    top = kb.query_text("first president of the United States", 1)
    assert top[0][0] == "Q23"


def test_duplicate_ids_in_the_source_are_refused(tmp_path, text_embedder):
    e = Entity(id="x", name="X")
    with pytest.raises(DatasetError, match="duplicate entity id 'x'"):
        build_kb([e, e], tmp_path / "kb", text_embedder, None, progress=False)
    assert not (tmp_path / "kb").exists()


@pytest.mark.slow
def test_open_clip_image_collection(tmp_path, text_embedder):
    """open_clip vectors fill the image collection (random weights: tests only, never the default)."""
    from retlink.tools.kb.embedders import OpenClipImageEmbedder

    clip = OpenClipImageEmbedder("ViT-B-32", pretrained=None)
    ds = load_dataset("wikimel", FIXTURES / "wikimel")
    manifest = build_kb(ds.entities(), tmp_path / "kb", text_embedder, clip, progress=False)
    assert (manifest["image_model"], manifest["image_count"]) == ("open_clip:ViT-B-32", 3)
    kb = KBStore(tmp_path / "kb", text_embedder, clip)
    vec = clip.embed_images([Image.open(ds.root / "kb_image" / "Q5080178_0.jpg")])[0]
    assert kb.query_image(vec, 1)[0] == ("Q5080178", pytest.approx(1.0, abs=1e-3))


def test_builders_starting_at_once_build_the_kb_once(tmp_path, text_embedder):
    """Two builders of one KB at once (two servers, two test runs sharing the cache's demo KB): one
    builds under the KB's build lock, the other waits and finds it current. Threads here, each
    with its own open lock file, exclude each other exactly as processes do (flock is per open
    file)."""
    lines = (REPO / "src" / "retlink" / "data" / "demo" / "entities.jsonl").read_text().splitlines()
    rows = [{k: v for k, v in json.loads(line).items() if k != "image_paths"} for line in lines[:6]]
    src = tmp_path / "entities.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "kb"
    start = threading.Barrier(2)

    def builder(_: int) -> bool:
        start.wait(timeout=30)
        return ensure_built(src, out, text_embedder, None)

    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(builder, range(2)))
    assert sorted(built) == [False, True]
    assert is_current(out, src) and not (tmp_path / "kb.partial").exists()
    assert len(KBStore(out, text_embedder, None)) == 6


def test_a_kb_whose_source_folder_is_gone_is_rebuilt(tmp_path, text_embedder):
    """A cached KB (the demo KB under $RETLINK_CACHE) resolves its entities' relative image paths
    against the folder it was built from; when that checkout is deleted, the same entities file
    elsewhere must rebuild it, or its images are silently unreadable (no attack distractors)."""
    lines = (REPO / "src" / "retlink" / "data" / "demo" / "entities.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines[:3]]
    for r in rows:
        r["image_paths"] = []
    old, new = tmp_path / "old-checkout", tmp_path / "new-checkout"
    for d in (old, new):
        d.mkdir()
        (d / "entities.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "kb"
    assert ensure_built(old / "entities.jsonl", out, text_embedder, None)
    assert not ensure_built(new / "entities.jsonl", out, text_embedder, None)  # same content, old folder still there
    (old / "entities.jsonl").unlink()
    old.rmdir()
    assert not is_current(out, new / "entities.jsonl")
    assert ensure_built(new / "entities.jsonl", out, text_embedder, None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == str((new / "entities.jsonl").resolve())
