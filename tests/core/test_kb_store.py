"""The KB store and builder, the same tests on both places a KB can live: a folder (embedded
chromadb) and a real chroma server (`chroma run` on 127.0.0.1, started by the session fixture
`chroma_server`)."""

import itertools
import json
import re

import pytest

from retlink.core.errors import DatasetError, KBError
from retlink.tools.kb.build import build_kb, is_current, read_entities
from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder
from retlink.tools.kb.location import MANIFEST_KEY, FolderKB, ServerKB
from retlink.tools.kb.store import KBStore, normalise_name

PLACES = ["folder", "server"]
_names = itertools.count()


@pytest.fixture(scope="module")
def embedders():
    return shared_text_embedder(), shared_image_embedder()


@pytest.fixture(params=PLACES)
def place(request, tmp_path):
    """A factory of fresh KB locations: folders under tmp_path, or KBs on the chroma server."""
    if request.param == "folder":
        return lambda name: FolderKB(tmp_path / name)
    server = request.getfixturevalue("chroma_server")
    return lambda name: ServerKB(server.url, f"{name}-{next(_names)}")


@pytest.fixture(params=PLACES)
def demo_kb(request):
    """The demo KB, in a folder or on the chroma server."""
    return request.getfixturevalue("demo_kb_path" if request.param == "folder" else "demo_kb_server")


def write_manifest(location, manifest: dict) -> None:
    """Overwrite a KB's manifest where it lives (to test how damaged KBs are refused)."""
    if isinstance(location, FolderKB):
        (location.path / "manifest.json").write_text(json.dumps(manifest))
    else:
        location.client.get_collection(location.collection_name("meta")).modify(
            metadata={MANIFEST_KEY: json.dumps(manifest)}
        )


def _entities(tmp_path, rows):
    p = tmp_path / "entities.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def test_demo_kb_queries(demo_kb, demo_dir, embedders):
    text, image = embedders
    kb = KBStore(demo_kb, text, image)
    assert len(kb) == sum(1 for _ in read_entities(demo_dir / "entities.jsonl"))
    assert set(kb.aliases.lookup("CHELSEA!")) == {"chelsea_cat", "chelsea_fc", "chelsea_london", "chelsea_clinton"}
    assert kb.query_text("the silver coin of ancient Greek city states", 1)[0][0] == "ancient_drachma"
    from retlink.tools.images import load_image

    vec = image.embed_images([load_image(demo_dir / "images" / "rocket.jpg")])[0]
    assert kb.query_image(vec, 1)[0][0] in {"falcon_9", "falcon_heavy"}
    sims = kb.image_similarity(vec, ["falcon_9", "chelsea_cat", "java_language"])
    assert "java_language" not in sims  # no image, no score
    assert sims["falcon_9"] > sims["chelsea_cat"]
    entities = kb.get(["moon", "missing-id", "brick"])
    assert [e.id for e in entities] == ["moon", "brick"]


def test_normalise_name():
    assert normalise_name("  Chelsea F.C. ") == "chelsea f c"
    assert normalise_name("Lemaître") == "lemaitre"


def test_interrupted_build_leaves_no_kb_and_a_fixed_source_starts_over(tmp_path, place, embedders):
    """A failed build leaves only its `.partial`; fixing the source changes its sha256, so the
    partial is discarded rather than mixed in (issue 15). Resuming from an unchanged source is
    tests/kb/test_kb_build_resume.py's."""
    text, image = embedders
    rows = [{"id": f"e{i}", "name": f"Entity {i}", "description": f"number {i}"} for i in range(10)]
    src = _entities(tmp_path, rows)
    with src.open("a") as fh:
        fh.write('{"id": "broken", "name": ""}\n')
    out = place("kb")
    with pytest.raises(DatasetError, match=r"entities.jsonl:11: invalid entity \(name"):
        build_kb(src, out, text, image, batch_size=4, progress=False)
    assert out.read_manifest() is None, "an interrupted build must not leave a KB behind"
    with pytest.raises(KBError, match="no knowledge base"):
        KBStore(out, text, image)
    assert out.partial_exists()
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    manifest = build_kb(src, out, text, image, batch_size=4, progress=False)
    assert manifest["count"] == 10
    assert manifest["skipped_existing"] == 0  # the partial came from another source: started over
    assert not out.partial_exists()
    assert is_current(out, src)
    kb = KBStore(out, text, image)
    assert len(kb) == 10 and kb.aliases.lookup("entity 3") == ["e3"]


def test_rebuild_replaces_atomically_and_detects_staleness(tmp_path, place, embedders):
    text, image = embedders
    src = _entities(tmp_path, [{"id": "a", "name": "Alpha"}])
    out = place("kb")
    build_kb(src, out, text, image, progress=False)
    src.write_text(json.dumps({"id": "b", "name": "Beta"}) + "\n")
    assert not is_current(out, src)
    build_kb(src, out, text, image, progress=False)  # replaces the KB: nothing of the old one stays
    assert is_current(out, src)
    kb = KBStore(out, text, image)
    assert [e.id for e in kb.get(["a", "b"])] == ["b"] and len(kb) == 1
    assert kb.aliases.lookup("alpha") == [] and kb.aliases.lookup("BETA") == ["b"]


def test_duplicate_ids_and_missing_files_are_errors(tmp_path, place, embedders):
    text, image = embedders
    src = _entities(tmp_path, [{"id": "a", "name": "A"}, {"id": "a", "name": "A again"}])
    out = place("kb")
    with pytest.raises(DatasetError, match="duplicate entity id 'a'"):
        build_kb(src, out, text, image, progress=False)
    assert out.read_manifest() is None
    with pytest.raises(DatasetError, match="not found"):
        build_kb(tmp_path / "nope.jsonl", place("kb2"), text, image, progress=False)


def test_opening_bad_kbs(tmp_path, place, embedders):
    text, image = embedders
    with pytest.raises(KBError, match="no knowledge base"):
        KBStore(place("empty"), text, image)
    broken = place("broken")
    manifest = build_kb(_entities(tmp_path, [{"id": "a", "name": "A"}]), broken, text, image, progress=False)
    assert broken.read_manifest() == manifest
    write_manifest(broken, {**manifest, "status": "building"})
    with pytest.raises(KBError, match="incomplete"):
        KBStore(broken, text, image)
    write_manifest(broken, {**manifest, "text_model": "other-model"})
    with pytest.raises(KBError, match="built with text model 'other-model'"):
        KBStore(broken, text, image)


def test_a_reader_creates_nothing_where_there_is_no_kb(tmp_path, place, embedders):
    """Opening a KB that is not there (a typo in the path or name) is the clear error, and the
    reader leaves no empty folder, chroma store or collection behind."""
    text, image = embedders
    typo = place("typo")
    with pytest.raises(KBError, match=f"no knowledge base at {re.escape(str(typo))}"):
        typo.open(text)
    with pytest.raises(KBError, match="no knowledge base at"):
        KBStore(typo, text, image)
    if isinstance(typo, FolderKB):
        assert not typo.path.exists() and not typo.work.exists()
        assert list(tmp_path.iterdir()) == []
    else:
        assert not [c for c in typo.client.list_collections() if c.name.startswith(typo.name)]
    assert typo.read_manifest() is None


def test_missing_entity_image_is_skipped_with_count(tmp_path, place, embedders):
    text, image = embedders
    src = _entities(tmp_path, [{"id": "a", "name": "A", "image_paths": ["missing.jpg"]}])
    manifest = build_kb(src, place("kb"), text, image, progress=False)
    assert manifest["missing_images"] == 1 and manifest["image_count"] == 0
