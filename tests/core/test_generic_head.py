"""A decision head fitted across benchmarks (`scope: embedders`) is bound to the embedders only:
it loads on a KB it has never seen that the same embedders built, where a KB head is refused.

Real parts: KBs built with the embedded models from fixture entity files (the demo's entities,
a subset of them, and a small new KB), links made by the eval runner, the head fitted by
`retlink train` and used by the agent."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import yaml

from retlink.core.config import GENERIC_HEAD
from retlink.core.errors import ConfigError
from retlink.train import load_train_config, train

DEMO = Path("src/retlink/data/demo")


def entities_file(path: Path, keep) -> Path:
    lines = [line for line in (DEMO / "entities.jsonl").read_text().splitlines() if line.strip()]
    path.write_text("\n".join(line for line in lines if keep(json.loads(line))) + "\n")
    return path


def golds() -> set[str]:
    return {json.loads(line)["gold"] for line in (DEMO / "examples.jsonl").read_text().splitlines() if line.strip()}


def eval_cfg(name: str, kb: Path, entities: Path, runs: Path) -> dict:
    return {
        "name": name,
        "dataset": {"key": "demo", "split": "test", "limit": 4},
        "kb": {"path": str(kb), "entities": str(entities)},
        "pipelines": [{"name": "agent-retrieval", "kind": "agent", "overrides": {"reasoner": {"enabled": False}}}],
        "output_dir": str(runs),
    }


def test_a_list_of_evals_needs_an_out_file_and_head_generic_is_a_name_not_a_path(tmp_path):
    one = eval_cfg("a", tmp_path / "kb", DEMO / "entities.jsonl", tmp_path / "runs")
    cfg = {"name": "g", "pipelines": ["agent-retrieval"], "scope": "embedders", "eval": [one, {**one, "name": "b"}]}
    with pytest.raises(ConfigError, match="out: name the head's file"):
        load_train_config(cfg)
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(one))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({**cfg, "eval": ["a.yaml", "a.yaml"], "out": "h.json"}))
    train_cfg, evals = load_train_config(tmp_path / "train.yaml")  # a list of paths, relative to the file
    assert len(evals) == 2 and train_cfg.out == tmp_path / "h.json"
    from retlink.agent.config import load_config

    (tmp_path / "agent.yaml").write_text(f"decision: {{head: {GENERIC_HEAD}}}\n")
    assert load_config(tmp_path / "agent.yaml").decision.head == GENERIC_HEAD  # not resolved as a path


@pytest.mark.slow
def test_a_head_fitted_across_kbs_loads_on_a_new_kb_where_a_kb_head_is_refused(tmp_path):
    from retlink import Linker

    needed = golds()
    full = entities_file(tmp_path / "full.jsonl", lambda e: True)
    subset = entities_file(tmp_path / "subset.jsonl", lambda e: e["id"] in needed or zlib.crc32(e["id"].encode()) % 2)
    assert full.read_text() != subset.read_text()
    evals = [
        eval_cfg("on-full", tmp_path / "kb-full", full, tmp_path / "runs"),
        eval_cfg("on-subset", tmp_path / "kb-subset", subset, tmp_path / "runs"),
    ]
    base = {"pipelines": ["agent-retrieval"], "folds": 2}
    with pytest.raises(ConfigError, match="KBs differ"):
        train({**base, "name": "kb", "eval": evals, "out": str(tmp_path / "kb-both.json")})
    path, head = train({**base, "name": "g", "scope": "embedders", "eval": evals, "out": str(tmp_path / "g.json")})
    assert set(head.fingerprint) == {"text_model", "image_model", "scope"} and head.metrics["links"] == 8
    kb_head, _ = train({**base, "name": "kb", "eval": evals[:1], "out": str(tmp_path / "kb-full.json")})

    new_kb = tmp_path / "kb-new"  # a KB neither head saw: five of the demo's entities
    new = entities_file(tmp_path / "new.jsonl", lambda e: e["id"] in {"moon", "luna_lovegood", "brick", "lego_brick", "retina"})
    agent = {"kb": {"path": str(new_kb), "entities": str(new)}, "reasoner": {"enabled": False}}
    result = Linker.from_config({**agent, "decision": {"head": str(path)}}).link(
        DEMO / "images" / "moon.jpg", "Luna", "Through the telescope the craters of [Luna] look sharp and grey tonight."
    )
    assert result.decided_by == "head" and result.entity_id == "moon"
    with pytest.raises(ConfigError, match="another KB or embedder"):
        Linker.from_config({**agent, "decision": {"head": str(kb_head)}})


@pytest.mark.slow
def test_the_shipped_generic_head_links_a_kb_it_never_saw_without_loading_the_llm(tmp_path):
    """`decision: {head: generic}` on a KB built here from a fixture: the head the package ships
    loads (its embedders are the embedded default's), decides, and the LLM is never loaded (the
    reasoner's model points at a folder that does not exist)."""
    from retlink import Linker
    from retlink.agent.decision import DecisionHead, head_file
    from retlink.agent.decision.features import FEATURES

    shipped = json.loads(head_file(GENERIC_HEAD).read_text())
    assert shipped["fingerprint"]["scope"] == "embedders" and shipped["reasoner_weight"] == 0
    assert set(shipped["metrics"]["by_dataset"]) == {"logos", "icons"}  # fitted on DEV links only
    assert shipped["metrics"]["split"] == "dev"
    DecisionHead.load(GENERIC_HEAD, features=FEATURES)  # the name resolves to the packaged file

    new = entities_file(tmp_path / "new.jsonl", lambda e: e["id"] in {"moon", "luna_lovegood", "luna_programme", "brick", "retina"})
    cfg = {"kb": {"path": str(tmp_path / "kb"), "entities": str(new)}, "decision": {"head": GENERIC_HEAD},
           "reasoner": {"llm": {"model": str(tmp_path / "no-such-model")}}}
    linker = Linker.from_config(cfg)
    assert linker.components.reasoner_llm is None
    result = linker.link(DEMO / "images" / "moon.jpg", "Luna", "Through the telescope the craters of [Luna] look sharp and grey tonight.")
    assert result.decided_by == "head" and result.entity_id == "moon"


def test_the_default_is_the_shipped_head_where_it_fits_and_no_head_where_it_does_not(tmp_path):
    """`decision.head: auto` (the default): the shipped head on a KB the default embedders built
    here, no LLM loaded; no head (the reasoner decides) when the config names another reasoner
    model; a head of the user's own overrides it (a path in `decision.head`)."""
    from retlink import Linker
    from retlink.agent.backends import load_head
    from retlink.agent.config import load_config
    from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder
    from retlink.tools.kb.store import KBStore

    new = entities_file(tmp_path / "new.jsonl", lambda e: e["id"] in {"moon", "luna_lovegood", "luna_programme", "brick"})
    linker = Linker.from_config({"kb": {"path": str(tmp_path / "kb"), "entities": str(new)}})
    assert load_config().decision.head == "auto"
    assert linker.components.head is not None and linker.components.reasoner_llm is None
    result = linker.link(DEMO / "images" / "moon.jpg", "Luna", "The craters of [Luna] look sharp tonight.")
    assert result.decided_by == "head" and result.entity_id == "moon"
    kb = KBStore(tmp_path / "kb", shared_text_embedder(), shared_image_embedder())
    served = load_config({"kb": {"path": str(tmp_path / "kb")},
                          "reasoner": {"llm": {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}}})
    assert load_head(served, kb) is None  # a reasoner the user chose decides
    threads = load_config({"kb": {"path": str(tmp_path / "kb")}, "reasoner": {"llm": {"threads": 1}}})
    assert load_head(threads, kb) is not None  # the same model, other settings: still the shipped head
    with pytest.raises(ConfigError, match="no head at"):  # a named file is the user's head, never replaced
        load_head(load_config({"kb": {"path": str(tmp_path / "kb")}, "decision": {"head": str(tmp_path / "mine.json")}}), kb)
