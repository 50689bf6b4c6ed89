"""The logos benchmark's search corpus from a Debian package index (a small Packages fixture).

Real parts: the corpus is read back by the real `LocalCorpusSearch` with the shipped MiniLM.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retlink.cli import app
from retlink.core.errors import ConfigError, DatasetError
from retlink.datasets.build.logos_corpus import CORPUS, CORPUS_MANIFEST, build_corpus, parse_packages
from retlink.tools.kb.embedders import shared_text_embedder
from retlink.tools.search.local import LocalCorpusSearch

PACKAGES = """\
Package: kafkacat
Version: 1.7.0-2
Section: net
Description: generic command line non-JVM Apache Kafka producer and consumer
Homepage: https://github.com/edenhill/kcat
Tag: role::program,
 interface::commandline

Package: librdkafka1
Section: libs
Description: library implementing the Apache Kafka protocol

Package: rclone
Section: net
Description: rsync for commercial cloud storage
Homepage: https://rclone.org

Package: rclone-browser
Description: Simple cross platform GUI for rclone

Package: purchase-tracker
Description: tracks what you purchase and when

Package: kafka-tools-extra
Description: more tools for Apache Kafka clusters

Package: no-description-here
Section: misc
"""

ENTITIES = [
    {"id": "apachekafka", "name": "Apache Kafka"},
    {"id": "rclone", "name": "Rclone"},
    {"id": "chase", "name": "Chase"},
    {"id": "go", "name": "Go"},
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "entities.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ENTITIES))
    return tmp_path


def test_parse_joins_continuations_and_skips_packages_without_description():
    pkgs = list(parse_packages(PACKAGES))
    assert [p["Package"] for p in pkgs] == [
        "kafkacat", "librdkafka1", "rclone", "rclone-browser", "purchase-tracker", "kafka-tools-extra"
    ]
    assert pkgs[0]["Tag"] == "role::program, interface::commandline"


def test_packages_are_matched_by_whole_name_own_slug_first_and_capped(data_dir: Path):
    manifest = build_corpus(data_dir, PACKAGES, per_entity=2)
    docs = [json.loads(line) for line in (data_dir / CORPUS).read_text().splitlines()]
    urls = {d["url"].rsplit("/", 1)[1] for d in docs}
    # Kafka: three packages name it, the two shortest names are kept; rclone: its own slug first,
    # then the GUI; "Chase" is not found inside "purchase"; "Go" is too short to match at all
    assert urls == {"kafkacat", "librdkafka1", "rclone", "rclone-browser"}
    assert manifest["entities_with_documents"] == 2 and manifest["documents"] == 4
    kafkacat = next(d for d in docs if d["url"].endswith("/kafkacat"))
    assert kafkacat["title"].startswith("kafkacat - generic command line")
    assert "Homepage: https://github.com/edenhill/kcat" in kafkacat["text"] and "Debian section: net" in kafkacat["text"]
    # the same index gives the same bytes (the manifest's sha256 says so)
    again = build_corpus(data_dir, PACKAGES, per_entity=2)
    assert again["corpus_sha256"] == manifest["corpus_sha256"]
    assert json.loads((data_dir / CORPUS_MANIFEST).read_text())["index_packages"] == 6


def test_the_local_search_backend_finds_an_entity_page(data_dir: Path):
    build_corpus(data_dir, PACKAGES)
    search = LocalCorpusSearch(data_dir / CORPUS, shared_text_embedder())
    hits = search.search_sync("Rclone cloud storage", k=2)
    assert hits[0].url == "https://packages.debian.org/rclone"
    hits = search.search_sync("Apache Kafka", k=1)
    assert "Kafka" in hits[0].title


def test_clear_errors(data_dir: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="no package with a description"):
        build_corpus(data_dir, "Package: x\nSection: y\n")
    with pytest.raises(DatasetError, match="build the benchmark first"):
        build_corpus(tmp_path / "missing", PACKAGES)
    (data_dir / "entities.jsonl").write_text('{"id": "a", "name": "A"}\nnot json\n')
    with pytest.raises(DatasetError, match=r"entities.jsonl:2: malformed JSON"):
        build_corpus(data_dir, PACKAGES)


def test_cli_builds_from_a_packages_file_and_names_its_errors(data_dir: Path, tmp_path: Path):
    index = tmp_path / "Packages"
    index.write_text(PACKAGES)
    runner = CliRunner()
    res = runner.invoke(app, ["data", "corpus", "logos", "--data", str(data_dir), "--packages", str(index)])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # rich wraps long lines
    assert "5 documents about 2 of 4 KB entities" in said
    assert (data_dir / CORPUS).is_file()
    res = runner.invoke(app, ["data", "corpus", "logos", "--data", str(data_dir), "--packages", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "package index not found" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["data", "corpus", "demo", "--data", str(data_dir), "--packages", str(index)])
    assert res.exit_code == 2 and "no search corpus builder for 'demo'" in res.output
