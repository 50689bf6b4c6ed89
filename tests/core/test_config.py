from pathlib import Path

import pytest

from retlink.agent.config import RetlinkConfig, load_config
from retlink.core.errors import ConfigError


def test_default_preset_points_at_the_demo_data():
    cfg = load_config()
    assert cfg.kb.entities is not None and Path(cfg.kb.entities).name == "entities.jsonl"
    assert Path(cfg.kb.entities).exists()
    assert cfg.search.backends[0].kind == "local" and Path(cfg.search.backends[0].path).exists()


def test_unknown_key_is_named():
    with pytest.raises(ConfigError) as e:
        load_config({"kb": {"top_kk": 3}})
    assert "kb.top_kk: unknown key" in str(e.value)


def test_bad_value_is_named():
    with pytest.raises(ConfigError) as e:
        load_config({"reasoner": {"min_confidence": 3}})
    assert "reasoner.min_confidence" in str(e.value)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match=r"presets: .*default"):
        load_config("no-such-preset")


def test_yaml_errors_and_relative_paths(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kb: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(notmap)
    good = tmp_path / "sub" / "cfg.yaml"
    good.parent.mkdir()
    good.write_text("kb:\n  path: kbdir\n  entities: ../ents.jsonl\n")
    cfg = load_config(good)
    assert cfg.kb.path == (tmp_path / "sub" / "kbdir").resolve()
    assert cfg.kb.entities == (tmp_path / "ents.jsonl").resolve()


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/config.yaml")


def test_config_object_passes_through():
    cfg = RetlinkConfig()
    assert load_config(cfg) is cfg


def test_cache_variable_expands(tmp_path, monkeypatch):
    monkeypatch.setenv("RETLINK_CACHE", str(tmp_path / "cache"))
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("kb:\n  path: $RETLINK_CACHE/kb\n")
    assert load_config(cfg_file).kb.path == tmp_path / "cache" / "kb"


def test_one_network_name_in_every_role_and_old_spellings_read_as_it(demo_kb_path):
    from retlink.agent.backends import open_kb
    from retlink.attacks.spec import AttackSpec
    from retlink.core.networks import DEFAULT_NETWORK, NETWORKS
    from retlink.eval.baseline import BaselineConfig, CLIPBaseline
    from retlink.eval.config import load_eval_config
    from tests.conftest import fast_config

    assert DEFAULT_NETWORK == "efficientnet_lite0"
    for old in ("efficientnet", "lite0", "efficientnet_lite0"):  # the registry's aliases
        cfg = load_config(
            fast_config(
                demo_kb_path,
                embedder={"image_backend": old},
                captioner={"vision_model": old},
                defence={"detector": {"model": old}},
            )
        )
        assert cfg.embedder.image_backend == cfg.captioner.vision_model == cfg.defence.detector.model == DEFAULT_NETWORK
        assert BaselineConfig(image_backend=old).image_backend == DEFAULT_NETWORK
        assert AttackSpec(name="a", attack="pgd", surrogate=f"{old}+lite1").surrogate == "efficientnet_lite0+efficientnet_lite1"
    kb = open_kb(cfg)  # the demo KB records Lite0 as "efficientnet"; a mismatch would be refused
    assert kb.has_images and kb.image_embedder.name == kb.manifest["image_model"] == NETWORKS[DEFAULT_NETWORK].kb_name
    assert CLIPBaseline.from_kb(demo_kb_path, {"image_backend": "efficientnet"}).kb.has_images
    with pytest.raises(ConfigError, match=r"attacks\[0\]\.surrogate.*unknown network 'resnet50'"):
        load_eval_config(
            {
                "name": "x",
                "dataset": {"key": "demo"},
                "kb": {"path": "/tmp/k"},
                "pipelines": [{"name": "b", "kind": "baseline"}],
                "attacks": [{"name": "a", "attack": "pgd", "surrogate": "resnet50"}],
            }
        )


def test_a_missing_dependency_fails_under_retlink_require_deps(monkeypatch):
    from tests.conftest import skip_or_fail

    monkeypatch.delenv("RETLINK_REQUIRE_DEPS", raising=False)
    monkeypatch.delenv("RETLINK_REQUIRE_VLLM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="torchattacks"):
        skip_or_fail("torchattacks is missing")
    with pytest.raises(pytest.skip.Exception, match="venv"):
        skip_or_fail("the venv is absent", "RETLINK_REQUIRE_VLLM")
    monkeypatch.setenv("RETLINK_REQUIRE_DEPS", "1")
    with pytest.raises(pytest.fail.Exception, match="RETLINK_REQUIRE_DEPS is set but torchattacks is missing"):
        skip_or_fail("torchattacks is missing")
    with pytest.raises(pytest.skip.Exception):  # each requirement has its own switch
        skip_or_fail("the venv is absent", "RETLINK_REQUIRE_VLLM")
    monkeypatch.setenv("RETLINK_REQUIRE_VLLM", "1")
    with pytest.raises(pytest.fail.Exception, match="RETLINK_REQUIRE_VLLM is set but the venv is absent"):
        skip_or_fail("the venv is absent", "RETLINK_REQUIRE_VLLM")


def test_every_dependency_skip_goes_through_skip_or_fail():
    """No test skips on a missing dependency by itself (a bare pytest.skip or importorskip would
    pass `make test` silently where RETLINK_REQUIRE_DEPS promises the dependency)."""
    tests = Path(__file__).resolve().parents[1]
    own = {tests / "conftest.py", Path(__file__).resolve()}
    bare = [
        f"{p.relative_to(tests)}:{i}"
        for p in sorted(tests.rglob("*.py"))
        if p not in own
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if any(k in line for k in ("pytest.skip(", "importorskip(", "mark.skipif", "mark.skip(", "mark.xfail"))
    ]
    assert bare == []


def test_deep_preset_is_the_default_before_issue_20s_cuts():
    """`deep` changes exactly the three things issue 20 cut (README, "Fewer LLM seconds") back to
    what they were, and decides by the reasoner as the default then did (no head), nothing else:
    the eval configs behind README's older agent numbers name it."""
    from retlink.core.schema import PromptConfig

    default, deep = load_config(), load_config("deep")
    assert default.reasoner.prompt == PromptConfig()
    assert deep.reasoner.prompt == PromptConfig(instructions="last", description_chars=None, evidence_chars=1200)
    assert (deep.reasoner.max_reasoning_tokens, default.reasoner.max_reasoning_tokens) == (32, 0)
    assert (deep.enhancer.condense, default.enhancer.condense) == ("llm", "extract")
    redone = {
        "reasoner": deep.reasoner.model_copy(update={"prompt": PromptConfig(), "max_reasoning_tokens": 0}),
        "enhancer": deep.enhancer.model_copy(update={"condense": "extract"}),
        "decision": deep.decision.model_copy(update={"head": "auto"}),
    }
    assert deep.decision.head is None and default.decision.head == "auto"
    assert deep.model_copy(update=redone) == default


def test_a_preset_is_an_overlay_on_the_default(tmp_path, monkeypatch):
    """A preset names only what it changes; everything else, paths included, is the default's."""
    import retlink.agent.config as config

    (tmp_path / "default.yaml").write_text(
        "kb: {path: kb, entities: ents.jsonl, top_k: 7}\n"
        "search: {backends: [{kind: local, path: corpus.jsonl}]}\n"
    )
    (tmp_path / "tiny.yaml").write_text("reasoner: {max_reasoning_tokens: 3}\nsearch: {backends: []}\n")
    (tmp_path / "broken.yaml").write_text("reasoner: {max_reasoning_tokenz: 3}\n")
    monkeypatch.setattr(config, "PRESET_DIR", tmp_path)
    tiny = load_config("tiny")
    assert tiny.reasoner.max_reasoning_tokens == 3
    assert tiny.kb.top_k == 7 and tiny.kb.entities == tmp_path / "ents.jsonl"
    assert tiny.search.backends == []  # a list in the overlay replaces the default's
    assert Path(load_config("default").search.backends[0].path) == tmp_path / "corpus.jsonl"
    with pytest.raises(ConfigError, match=r"(?s)preset 'broken'.*reasoner.max_reasoning_tokenz: unknown key"):
        load_config("broken")


def test_shipped_presets_follow_the_default_kb_and_search():
    """No preset restates the default's KB or search (it would go stale when the default moves)."""
    from retlink.agent.config import PRESET_DIR
    from retlink.core.config import read_yaml

    for path in PRESET_DIR.glob("*.yaml"):
        if path.stem != "default":
            assert not {"kb", "search"} & set(read_yaml(path)), path.name
            cfg = load_config(path.stem)
            assert (cfg.kb, cfg.search) == (load_config().kb, load_config().search)
            assert load_config(path) == cfg  # the preset's file by its path is the same overlay
