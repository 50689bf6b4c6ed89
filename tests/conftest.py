"""Shared fixtures: real models (loaded once per session), a demo KB built in a temp folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "src" / "retlink" / "data" / "demo"


def skip_or_fail(reason: str, require: str = "RETLINK_REQUIRE_DEPS") -> None:
    """Skip a test whose dependency (a test-only package, a system command, the vLLM venv, a
    library version) is missing, or fail it where the environment variable `require` is set:
    `make test` (CI) sets RETLINK_REQUIRE_DEPS and RETLINK_REQUIRE_VLLM, so a dependency the
    setup promises never hides as a skip there. The one way tests skip on a dependency."""
    if os.environ.get(require):
        pytest.fail(f"{require} is set but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def demo_examples() -> list[dict]:
    return [json.loads(line) for line in (DEMO / "examples.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def demo_kb_path(tmp_path_factory) -> Path:
    """The demo KB, built once per session with the real embedders."""
    from retlink.tools.kb.build import build_kb
    from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder

    out = tmp_path_factory.mktemp("kb") / "demo-kb"
    build_kb(DEMO / "entities.jsonl", out, shared_text_embedder(), shared_image_embedder(), progress=False)
    return out


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real chroma server (`chroma run` on 127.0.0.1), shared by the session's server-KB tests."""
    from tests.chroma_server import ChromaServer

    with ChromaServer(tmp_path_factory.mktemp("chroma") / "data") as server:
        yield server


@pytest.fixture(scope="session")
def demo_kb_server(chroma_server):
    """The demo KB, built once per session onto the chroma server (a `ServerKB`)."""
    from retlink.tools.kb.build import build_kb
    from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder
    from retlink.tools.kb.location import ServerKB

    location = ServerKB(chroma_server.url, "demo-kb")
    build_kb(DEMO / "entities.jsonl", location, shared_text_embedder(), shared_image_embedder(), progress=False)
    return location


def fast_config(kb_path: Path, **overrides) -> dict:
    """The embedded default's whole graph on the demo KB, with short generations to keep tests
    quick: no decision head, so search, the enhancer and the reasoner run (the default's shipped
    head gives the reasoner weight 0 and skips them; `tests/core/test_generic_head.py` tests it)."""
    cfg = {
        "kb": {"path": str(kb_path)},
        "decision": {"head": None},
        "search": {"backends": [{"kind": "local", "path": str(DEMO / "corpus.jsonl")}]},
        "reasoner": {"max_reasoning_tokens": 16},
        "enhancer": {"max_new_tokens": 16, "top_n": 2},
    }
    for section, values in overrides.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    return cfg


@pytest.fixture(scope="session")
def linker(demo_kb_path):
    from retlink import Linker

    return Linker.from_config(fast_config(demo_kb_path))


@pytest.fixture(scope="session")
def mate_set_dir(tmp_path_factory) -> Path:
    """A small MATE set (24 cross-modal questions, 8 controls, seed 3), rendered once per session."""
    from retlink.mate.build import build

    out = tmp_path_factory.mktemp("mate") / "set"
    build(out, 24, n_controls=8, seed=3)
    return out
