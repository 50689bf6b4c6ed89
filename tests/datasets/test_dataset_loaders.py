"""Every loader on its fixture (the published format), and on malformed variants that must give a
DatasetError naming the file and the line of the bad record."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from retlink.core.errors import ConfigError, DatasetError
from retlink.core.types import NIL
from retlink.datasets import Sample, available, load_dataset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"
DEMO = Path(__file__).resolve().parents[2] / "src" / "retlink" / "data" / "demo"


def copy_fixture(name: str, tmp_path: Path) -> Path:
    src = DEMO if name == "demo" else FIXTURES / name
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def test_registry_knows_every_loader():
    assert set(available()) >= {"demo", "wikimel", "richpediamel", "wikidiverse", "wikidiverse-mimic", "wikiperson", "m3el"}
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_dataset("nope", FIXTURES)


@pytest.mark.parametrize(("key", "prefix"), [("wikimel", "WIKIMEL"), ("richpediamel", "RichpediaMEL")])
def test_mimic_format_loaders(key, prefix):
    ds = load_dataset(key, FIXTURES / key)
    train = list(ds.samples("train"))
    # MIMIC drops "nil" answers; the URL-quoted mention is unquoted
    assert [(s.mention, s.gold_id) for s in train] == [("Charles L. Smith", "Q5080178"), ("Will Rogers", "Q198075")]
    assert train[0].image_path == (FIXTURES / key / "mention_image" / "Smith_and_Rogers.jpg").resolve()
    assert train[0].context.startswith("Seattle Mayor") and train[0].split == "train" and train[0].dataset == key
    assert train[0].source.endswith(f"{prefix}_train.json:2")
    assert [s.split for s in ds.samples()] == ["train", "train", "dev", "test"]
    assert next(iter(ds.samples("test"))).image_path is None  # imgPath ""
    with_nil = load_dataset(key, FIXTURES / key, include_nil=True)
    assert [s.gold_id for s in with_nil.samples("train")] == ["Q5080178", "Q198075", NIL]
    entities = {e.id: e for e in ds.entities()}
    assert set(entities) == {"Q5080178", "Q198075", "Q23"}
    assert entities["Q5080178"].name == "Charles L. Smith"
    assert len(entities["Q198075"].image_paths) == 2 and all(Path(p).is_file() for p in entities["Q198075"].image_paths)
    golds = {s.gold_id for s in ds.samples()}
    assert golds <= set(entities)


def test_wikidiverse_native_format():
    ds = load_dataset("wikidiverse", FIXTURES / "wikidiverse")
    samples = list(ds.samples())
    assert [(s.mention, s.gold_id, s.split) for s in samples] == [
        ("Lions", "Detroit_Lions", "train"),
        ("Packers", "Green_Bay_Packers", "train"),
        ("Bart", "Bart_Simpson", "valid"),
        ("street", NIL, "test"),
    ]
    # the README's naming rule: md5 of the URL's file name plus its extension
    assert samples[0].image_path.name == "062ce5e341a566a4208d801e53557538.jpg"
    assert samples[0].image_path.is_file() and samples[3].image_path is None
    entities = {e.id: e for e in ds.entities()}
    assert set(entities) == {"Detroit_Lions", "Green_Bay_Packers", "Bart_Simpson"}
    assert entities["Detroit_Lions"].name == "Detroit Lions"
    assert len(entities["Detroit_Lions"].image_paths) == 1 and entities["Detroit_Lions"].image_paths[0].endswith(".png")
    assert entities["Bart_Simpson"].image_paths == []


def test_wikiperson_visual_mentions():
    ds = load_dataset("wikiperson", FIXTURES / "wikiperson")
    test = list(ds.samples("test"))
    assert [s.gold_id for s in test] == ["Q76", "Q6294"]
    assert test[0].bbox == pytest.approx((55.471256, 15.353726, 73.55515, 42.034576))
    assert test[0].mention == "person" and test[0].context == ""
    assert list(ds.samples("val")) == []
    assert [e.id for e in ds.entities()] == ["Q76", "Q6294"]


def test_m3el_records_and_candidate_kb():
    ds = load_dataset("m3el", FIXTURES / "m3el")
    assert ds.splits == ("movies",)
    samples = list(ds.samples())
    assert [(s.mention, s.gold_id) for s in samples] == [("Kansas Saloon Smashers", "Q18151305"), ("Kansas", "Q204328")]
    assert samples[0].image_path.name == "Q18151305.jpg" and samples[0].image_path.is_file()
    entities = list(ds.entities())
    assert [e.id for e in entities] == ["Q18151305", "Q1558", "Q204328"]  # deduplicated by QID
    assert {e.name for e in entities} == {"Kansas Saloon Smashers", "Kansas"}


def test_demo_loader_matches_the_demo_files():
    ds = load_dataset("demo", DEMO)
    samples = list(ds.samples())
    entity_ids = {e.id for e in ds.entities()}
    assert len(samples) == sum(1 for line in (DEMO / "examples.jsonl").open() if line.strip())
    assert all(isinstance(s, Sample) and s.gold_id in entity_ids and s.image_path.is_file() for s in samples)


def test_unknown_split_and_missing_folder():
    with pytest.raises(ConfigError, match="no split 'dev'"):
        list(load_dataset("wikidiverse", FIXTURES / "wikidiverse").samples("dev"))
    with pytest.raises(ConfigError, match="folder not found"):
        load_dataset("wikimel", FIXTURES / "absent")


# -- malformed variants ---------------------------------------------------------------------


def edit_record(path: Path, line: int, change: Callable) -> None:
    """Apply `change` to the JSON record on `line` (fixtures keep one record per line)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    text = lines[line - 1]
    comma = text.endswith(",")
    record = json.loads(text.rstrip(","))
    change(record)
    lines[line - 1] = json.dumps(record) + ("," if comma else "")
    path.write_text("\n".join(lines), encoding="utf-8")


def break_encoding(path: Path, line: int) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1].replace(b"a", b"\xff\xfe", 1)
    path.write_bytes(b"\n".join(lines))


def drop(key):
    return lambda r: r.pop(key)


def put(key, value):
    return lambda r: r.__setitem__(key, value)


# (dataset, file, line, how, stream, expected message part)
CASES = [
    ("wikimel", "WIKIMEL_train.json", 3, drop("answer"), "samples", "missing field 'answer'"),
    ("wikimel", "WIKIMEL_train.json", 2, put("mentions", 5), "samples", "'mentions' must be str"),
    ("wikimel", "WIKIMEL_train.json", 3, "encoding", "samples", "not valid UTF-8"),
    ("wikimel", "WIKIMEL_train.json", 2, ("rm", "mention_image/Smith_and_Rogers.jpg"), "samples", "image file not found"),
    ("wikimel", "WIKIMEL_dev.json", 2, put("answer", "Q999"), "samples", "not in qid2id.json"),
    ("wikimel", "kb_entity.json", 3, drop("image_list"), "entities", "missing field 'image_list'"),
    ("wikimel", "kb_entity.json", 2, put("id", "zero"), "entities", "'id' must be int"),
    ("wikimel", "kb_entity.json", 3, ("rm", "kb_image/Q198075_1.jpg"), "entities", "image file not found"),
    ("richpediamel", "RichpediaMEL_test.json", 2, drop("sentence"), "samples", "missing field 'sentence'"),
    ("richpediamel", "kb_entity.json", 4, "encoding", "entities", "not valid UTF-8"),
    ("wikidiverse", "train.json", 2, lambda r: r.pop(3), "samples", "missing field 3"),
    ("wikidiverse", "train.json", 2, lambda r: r[3][1].__setitem__(2, "21"), "samples", "field 2 must be int"),
    ("wikidiverse", "valid.json", 2, lambda r: r[3][0].__setitem__(3, 99), "samples", "outside the caption"),
    ("wikidiverse", "valid.json", 2, ("rm", "wikinews_imgs/cac8fb8bc5f16bec6813f58801cdd7a6.png"), "samples", "image file not found"),
    ("wikidiverse", "entity2desc.txt", 3, "encoding", "entities", "not valid UTF-8"),
    ("wikiperson", "WIKIPerson_Test.json", 3, drop("wikiid"), "samples", "missing field 'wikiid'"),
    ("wikiperson", "WIKIPerson_Test.json", 3, put("boundingbox", [1, 2, 3, 4]), "samples", "'boundingbox' must be str"),
    ("wikiperson", "WIKIPerson_Test.json", 2, put("boundingbox", "[9, 9, 1, 1]"), "samples", "x2 <= x1"),
    ("wikiperson", "WIKIPerson_Test.json", 2, ("rm", "images/462710.jpg"), "samples", "image file not found"),
    ("wikiperson", "kb.jsonl", 1, drop("name"), "entities", "invalid entity"),
    ("m3el", "movies.json", 3, drop("sentence"), "samples", "missing field 'sentence'"),
    ("m3el", "movies.json", 2, put("Qid", 1), "samples", "'Qid' must be str"),
    ("m3el", "movies.json", 3, put("Qid", "Q1"), "samples", "not among the record's candidates"),
    ("m3el", "movies.json", 2, ("rm", "movies_candidates_images/Kansas Saloon Smashers-Q18151305/Q204328.JPG"), "entities", "image file not found"),
    ("demo", "examples.jsonl", 4, drop("gold"), "samples", "missing field 'gold'"),
    ("demo", "entities.jsonl", 5, put("name", ""), "entities", "invalid entity"),
]


@pytest.mark.parametrize(("key", "file", "line", "how", "stream", "message"), CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_records_are_located(tmp_path, key, file, line, how, stream, message):
    root = copy_fixture(key, tmp_path)
    path = root / file
    if how == "encoding":
        break_encoding(path, line)
    elif isinstance(how, tuple):
        (root / how[1]).unlink()
    elif file.endswith(".txt"):
        raise AssertionError("text files are only broken by encoding here")
    else:
        edit_record(path, line, how)
    ds = load_dataset(key, root)
    with pytest.raises(DatasetError) as err:
        list(ds.samples() if stream == "samples" else ds.entities())
    assert f"{path}:{line}:" in str(err.value)
    assert message in str(err.value)


def test_missing_images_can_be_tolerated_for_full_scale_runs(tmp_path, caplog):
    root = copy_fixture("wikimel", tmp_path)
    (root / "mention_image" / "Smith_and_Rogers.jpg").unlink()
    ds = load_dataset("wikimel", root, strict_images=False)
    assert [s.image_path for s in ds.samples("train")] == [None, None]
    assert "image file not found" in caplog.text


def test_missing_file_and_wikidiverse_separator(tmp_path):
    root = copy_fixture("wikidiverse", tmp_path)
    (root / "entity2desc.txt").write_text("Detroit_Lions@@@@ok\nno separator here\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"entity2desc.txt:2: expected 'title@@@@description'"):
        list(load_dataset("wikidiverse", root).entities())
    (root / "test.json").unlink()
    with pytest.raises(DatasetError, match=r"test.json: file not found"):
        list(load_dataset("wikidiverse", root).samples("test"))
