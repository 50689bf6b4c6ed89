import json
import shutil

import pytest

from retlink.errors import DatasetError, KBError
from retlink.tools.kb.build import build_kb, is_current, read_entities
from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder
from retlink.tools.kb.store import KBStore, normalise_name


@pytest.fixture(scope="module")
def embedders():
    return shared_text_embedder(), shared_image_embedder()


def _entities(tmp_path, rows):
    p = tmp_path / "entities.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def test_demo_kb_queries(demo_kb_path, demo_dir, embedders):
    text, image = embedders
    kb = KBStore(demo_kb_path, text, image)
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


def test_interrupted_build_leaves_no_kb_and_resumes(tmp_path, embedders):
    text, image = embedders
    rows = [{"id": f"e{i}", "name": f"Entity {i}", "description": f"number {i}"} for i in range(10)]
    src = _entities(tmp_path, rows)
    with src.open("a") as fh:
        fh.write('{"id": "broken", "name": ""}\n')
    out = tmp_path / "kb"
    with pytest.raises(DatasetError, match=r"entities.jsonl:11: invalid entity \(name"):
        build_kb(src, out, text, image, batch_size=4, progress=False)
    assert not out.exists(), "an interrupted build must not leave a KB behind"
    assert (tmp_path / "kb.partial").exists()
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    manifest = build_kb(src, out, text, image, batch_size=4, progress=False)
    assert manifest["count"] == 10
    assert manifest["skipped_existing"] == 8  # two full batches were embedded before the failure
    assert not (tmp_path / "kb.partial").exists()
    assert is_current(out, src)
    kb = KBStore(out, text, image)
    assert len(kb) == 10 and kb.aliases.lookup("entity 3") == ["e3"]


def test_rebuild_replaces_atomically_and_detects_staleness(tmp_path, embedders):
    text, image = embedders
    src = _entities(tmp_path, [{"id": "a", "name": "Alpha"}])
    out = tmp_path / "kb"
    build_kb(src, out, text, image, progress=False)
    src.write_text(json.dumps({"id": "b", "name": "Beta"}) + "\n")
    assert not is_current(out, src)
    shutil.rmtree(tmp_path / "kb")
    build_kb(src, out, text, image, progress=False)
    assert is_current(out, src)
    assert [e.id for e in KBStore(out, text, image).get(["a", "b"])] == ["b"]


def test_duplicate_ids_and_missing_files_are_errors(tmp_path, embedders):
    text, image = embedders
    src = _entities(tmp_path, [{"id": "a", "name": "A"}, {"id": "a", "name": "A again"}])
    with pytest.raises(DatasetError, match="duplicate entity id 'a'"):
        build_kb(src, tmp_path / "kb", text, image, progress=False)
    with pytest.raises(DatasetError, match="not found"):
        build_kb(tmp_path / "nope.jsonl", tmp_path / "kb2", text, image, progress=False)


def test_opening_bad_kbs(tmp_path, demo_kb_path, embedders):
    text, image = embedders
    with pytest.raises(KBError, match="no knowledge base"):
        KBStore(tmp_path / "empty", text, image)
    broken = tmp_path / "broken"
    shutil.copytree(demo_kb_path, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "status": "building"}))
    with pytest.raises(KBError, match="incomplete"):
        KBStore(broken, text, image)
    (broken / "manifest.json").write_text(json.dumps({**manifest, "text_model": "other-model"}))
    with pytest.raises(KBError, match="built with text model 'other-model'"):
        KBStore(broken, text, image)


def test_missing_entity_image_is_skipped_with_count(tmp_path, embedders):
    text, image = embedders
    src = _entities(tmp_path, [{"id": "a", "name": "A", "image_paths": ["missing.jpg"]}])
    manifest = build_kb(src, tmp_path / "kb", text, image, progress=False)
    assert manifest["missing_images"] == 1 and manifest["image_count"] == 0
