"""The KB on a real chroma server (`chroma run` on 127.0.0.1, started by the tests): built and
queried from the CLI, opened from `kb.server` in a config (and built there from `kb.entities`),
answering exactly as the same KB in a folder, sending the auth header from its environment
variable, and failing with a KBError that names the server when the server goes away.

The store and builder tests themselves run on both places in tests/core/test_kb_store.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from retlink.agent.backends import ensure_kb
from retlink.agent.config import load_config
from retlink.cli import app
from retlink.core.errors import ConfigError, KBError
from retlink.core.schema import KBConfig
from retlink.core.types import Entity
from retlink.tools.images import load_image
from retlink.tools.kb.build import build_kb, is_current, read_entities
from retlink.tools.kb.location import ServerKB, kb_location
from retlink.tools.kb.store import KBStore
from tests.chroma_server import ChromaServer, RecordingRelay
from tests.conftest import DEMO

runner = CliRunner()


def few_entities(tmp_path, prefixes=("falcon", "java", "chelsea")) -> Path:
    """A few demo entities (the ambiguous names), image paths made absolute: a KB that builds in
    seconds."""
    rows = []
    for e in read_entities(DEMO / "entities.jsonl"):
        if e.id.startswith(prefixes):
            rows.append(e.model_copy(update={"image_paths": [str(DEMO / p) for p in e.image_paths]}))
    path = tmp_path / "entities.jsonl"
    path.write_text("".join(e.model_dump_json() + "\n" for e in rows))
    return path


def test_cli_builds_onto_a_server_and_queries_it(chroma_server, tmp_path):
    entities = few_entities(tmp_path)
    n = len(entities.read_text().splitlines())
    tables = []
    for out in (chroma_server.address("cli-kb"), str(tmp_path / "cli-kb")):
        res = runner.invoke(app, ["kb", "build", str(entities), "--out", out])
        assert res.exit_code == 0, res.output
        assert f"{n} entities" in " ".join(res.stdout.split())
        res = runner.invoke(app, ["kb", "query", out, "Falcon", "-k", "3"])
        assert res.exit_code == 0, res.output
        tables.append(res.stdout)
    assert "falcon" in tables[0].lower() and "yes" in tables[0]  # the alias table travelled with it
    assert tables[0] == tables[1]  # the same table as the same KB in a folder
    res = runner.invoke(app, ["kb", "query", chroma_server.address("no-such-kb"), "Falcon"])
    assert res.exit_code == 2 and "no knowledge base at" in res.stderr and "Traceback" not in res.output


def test_a_server_kb_answers_as_the_same_kb_in_a_folder(demo_kb_path, demo_kb_server, text_embedder, image_embedder):
    folder = KBStore(demo_kb_path, text_embedder, image_embedder)
    server = KBStore(demo_kb_server, text_embedder, image_embedder)
    assert server.path is None and server.where == f"{demo_kb_server.url}/demo-kb"
    assert len(server) == len(folder) == 39
    skip = {"build_seconds", "entities_per_second"}
    assert {k: v for k, v in server.manifest.items() if k not in skip} == {
        k: v for k, v in folder.manifest.items() if k not in skip
    }
    entities = list(read_entities(DEMO / "entities.jsonl"))
    for e in entities:
        for name in (e.name, *e.aliases):
            assert server.aliases.lookup(name) == folder.aliases.lookup(name), name
    ids = [e.id for e in entities]
    assert server.get(ids) == folder.get(ids)
    for query in ("a rocket on the launch pad", "Chelsea", "a cup of coffee", "a football club in London"):
        got, want = server.query_text(query, 5), folder.query_text(query, 5)
        assert [i for i, _ in got] == [i for i, _ in want], query
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)
    photo = image_embedder.embed_images([load_image(DEMO / "images" / "rocket.jpg")])[0]
    got, want = server.query_image(photo, 3), folder.query_image(photo, 3)
    assert [i for i, _ in got] == [i for i, _ in want] and got[0][0] in {"falcon_9", "falcon_heavy"}
    assert server.image_similarity(photo, ids) == pytest.approx(folder.image_similarity(photo, ids), abs=1e-5)
    vec = text_embedder.embed(["a tabby cat"])[0]
    assert server.text_similarity(vec, ids) == pytest.approx(folder.text_similarity(vec, ids), abs=1e-5)
    assert server.image_file("images/rocket.jpg") == folder.image_file("images/rocket.jpg")


def test_a_config_with_kb_server_builds_the_kb_there_once(chroma_server, tmp_path, text_embedder, image_embedder):
    entities = few_entities(tmp_path, ("java", "falcon"))
    cfg = load_config({"kb": {"server": chroma_server.url + "/", "name": "from-config", "entities": str(entities)}})
    assert cfg.kb.server == chroma_server.url
    location = kb_location(cfg.kb)
    assert isinstance(location, ServerKB) and location.read_manifest() is None
    kb = ensure_kb(cfg, text_embedder, image_embedder)  # nothing there yet: built on the server
    assert len(kb) == len(entities.read_text().splitlines()) and is_current(location, entities)
    again = ensure_kb(cfg, text_embedder, image_embedder)  # current: opened, not rebuilt
    assert again.manifest["build_seconds"] == kb.manifest["build_seconds"]
    assert again.aliases.lookup("Java") == ["java_coffee", "java_island", "java_language"]


def test_kb_server_settings_are_checked_at_load():
    assert KBConfig(server="http://127.0.0.1:8000", path="/x/my-kb").server_name == "my-kb"
    for bad, message in [
        ({"server": "127.0.0.1:8000"}, r"kb\.server: .*expected http://HOST:PORT"),
        ({"server": "http://127.0.0.1"}, r"kb\.server: .*expected http://HOST:PORT"),
        ({"server": "http://127.0.0.1:8000/kbs"}, r"kb\.server: .*expected http://HOST:PORT"),
        ({"server": "http://127.0.0.1:8000", "name": "bad name!"}, r"kb\.name: "),
        ({"server": "http://127.0.0.1:8000", "path": "/x/kb.v2"}, r"kb\.server needs kb\.name"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config({"kb": bad})
    with pytest.raises(ConfigError, match=r"http://HOST:PORT/NAME"):
        kb_location("http://127.0.0.1:8000/")


def test_the_auth_header_comes_from_its_environment_variable(chroma_server, monkeypatch, text_embedder):
    relay = RecordingRelay(chroma_server.port)
    try:
        kb = KBConfig(server=relay.url, name="auth-kb", server_auth_env="RETLINK_TEST_CHROMA_TOKEN",
                      server_auth_header="X-Chroma-Token")
        with pytest.raises(ConfigError, match="RETLINK_TEST_CHROMA_TOKEN, which is not set"):
            kb_location(kb)
        monkeypatch.setenv("RETLINK_TEST_CHROMA_TOKEN", "s3cret-token")
        location = kb_location(kb)
        build_kb([Entity(id="a", name="Alpha")], location, text_embedder, None, progress=False)
        assert KBStore(location, text_embedder, None).aliases.lookup("alpha") == ["a"]
        sent = bytes(relay.sent).lower()
        assert sent.count(b"x-chroma-token: s3cret-token") >= 5  # on every request, not only the first
    finally:
        relay.close()


def test_a_server_that_goes_away_is_a_kb_error_naming_it(tmp_path, text_embedder):
    with ChromaServer(tmp_path / "data") as server:
        location = ServerKB(server.url, "short-lived")
        build_kb([Entity(id="a", name="Alpha")], location, text_embedder, None, progress=False)
        kb = KBStore(location, text_embedder, None)
        assert kb.query_text("alpha", 1)[0][0] == "a"
    with pytest.raises(KBError, match=rf"the knowledge base at {server.url}/short-lived failed"):
        kb.query_text("alpha", 1)
    with pytest.raises(KBError, match=rf"the knowledge base at {server.url}/short-lived failed"):
        kb.aliases.lookup("alpha")
    with pytest.raises(KBError, match=rf"cannot reach the chroma server at {server.url}"):
        KBStore(ServerKB(server.url, "short-lived"), text_embedder, None)


@pytest.mark.slow
def test_the_agent_links_through_a_server_kb(demo_kb_server):
    from retlink import Linker
    from tests.conftest import fast_config

    cfg = fast_config(DEMO, kb={"server": demo_kb_server.url, "name": "demo-kb"}, search={"enabled": False})
    linker = Linker.from_config(cfg)
    assert linker.components.kb.where == f"{demo_kb_server.url}/demo-kb"
    result = linker.link(DEMO / "images" / "rocket.jpg", "Falcon",
                         "The [Falcon] climbed away from the launch pad carrying a space weather satellite.")
    assert result.entity_id == "falcon_9"
    assert {c.entity.id for c in result.candidates} >= {"falcon_9", "falcon_heavy"}


def test_builders_of_one_server_kb_starting_at_once_build_it_once(chroma_server, tmp_path, text_embedder):
    """As for a folder (test_kb_build_resume.py): one builds under the KB's build lock (a lock file
    under the cache, named after server and KB), the other waits and finds it current."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from retlink.tools.kb.build import ensure_built

    src = few_entities(tmp_path, ("java",))
    rows = [e.model_copy(update={"image_paths": []}) for e in read_entities(src)]
    src.write_text("".join(e.model_dump_json() + "\n" for e in rows))
    location = ServerKB(chroma_server.url, "raced")
    assert location.lock_path().name == f"chroma-127.0.0.1_{chroma_server.port}-raced.lock"
    start = threading.Barrier(2)

    def builder(_: int) -> bool:
        start.wait(timeout=30)
        return ensure_built(src, ServerKB(chroma_server.url, "raced"), text_embedder, None)

    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(builder, range(2)))
    assert sorted(built) == [False, True]
    assert is_current(location, src) and not location.partial_exists()
    assert len(KBStore(location, text_embedder, None)) == len(rows)
