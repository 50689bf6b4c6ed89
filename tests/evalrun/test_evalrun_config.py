"""Eval configs: the bundled ones validate, malformed ones fail with the bad key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from evalrun_helpers import small_config
from typer.testing import CliRunner

from retlink.core.errors import ConfigError
from retlink.eval.config import fraction_text, load_eval_config
from retlink.eval.metrics import gold_rank
from retlink.eval.runner import link_inputs
from retlink.eval.runs import RecordLog, read_records

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "retlink"
CONFIGS = PACKAGE / "eval" / "configs" / "benchmarks"


def test_bundled_configs_validate(monkeypatch):
    # other eval tools keep their own configs in this folder too: check the runner's six; the
    # published datasets' roots are under $RETLINK_DATA
    monkeypatch.setenv("RETLINK_DATA", "/datasets")
    for name in ("demo", "m3el", "richpediamel", "wikidiverse", "wikimel", "wikiperson"):
        path = CONFIGS / f"{name}.yaml"
        cfg = load_eval_config(path)
        assert cfg.name == path.stem and cfg.reference_pipeline() == "baseline"
        if name != "demo":
            assert cfg.dataset.root == Path("/datasets") / name
    demo = load_eval_config(CONFIGS / "demo.yaml")
    assert demo.kb.entities == (PACKAGE / "data" / "demo" / "entities.jsonl").resolve()
    assert demo.attack("pgd-8").eps == pytest.approx(8 / 255)


def bad(tmp_path, **changes) -> str:
    cfg = small_config(tmp_path / "kb", tmp_path)
    for dotted, value in changes.items():
        node = cfg
        *path, last = dotted.split("__")
        for part in path:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    with pytest.raises(ConfigError) as err:
        load_eval_config(cfg)
    return str(err.value)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"pipelnes": []}, "pipelnes: unknown key"),
        ({"attacks__1__params": {"epss": 0.1}}, "unknown parameter(s) epss of attack 'pgd'"),
        ({"attacks__1__attack": "pgdd"}, "unknown attack 'pgdd'"),
        ({"attacks__0__target": "pixels"}, "attacks[0].target"),
        ({"attacks__0__name": "clean"}, "'clean' is reserved"),
        ({"dataset__key": "wikimell"}, "unknown dataset 'wikimell'"),
        ({"pipelines__1__kind": "agentt"}, "unknown pipeline kind 'agentt'"),
        ({"pipelines__1__name": "baseline"}, "duplicate name(s) baseline"),
        ({"settings": [{"name": "x", "setting": "it2t", "attacks": ["pgd-16"]}]}, "unknown attack(s) pgd-16"),
        ({"settings": [{"name": "x", "setting": "i2tt"}]}, "settings[0].setting"),
        ({"concurrency": 0}, "concurrency"),
        ({"kb": None}, "kb: Field required"),
        ({"reference": "agent"}, "no pipeline named 'agent'"),
        ({"attacks__1__params": {"eps": "8/0"}}, "division by zero"),
    ],
)
def test_malformed_configs_name_the_key(tmp_path, changes, expected):
    assert expected in bad(tmp_path, **changes)


def test_yaml_errors_name_the_file_and_the_cli_exits_2(tmp_path):
    from retlink.cli import app

    path = tmp_path / "broken.yaml"
    cfg = small_config(tmp_path / "kb", tmp_path)
    cfg["attacks"][0]["params"] = {"eps": "8/255", "stepz": 3}
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["eval", "run", str(path), "--dry-run"])
    assert res.exit_code == 2
    assert "broken.yaml" in res.output and "attacks[0]" in res.output and "stepz" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(app, ["eval", "report", str(tmp_path)])
    assert res.exit_code == 2 and "not a run folder" in res.output


def test_relative_paths_are_relative_to_the_yaml_file(tmp_path):
    (tmp_path / "sub").mkdir()
    cfg = small_config("kb-here", "runs")
    cfg["dataset"]["root"] = "../data"
    cfg["dataset"]["key"] = "demo"
    path = tmp_path / "sub" / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_eval_config(path)
    assert loaded.kb.path == tmp_path / "sub" / "kb-here"
    assert loaded.dataset.root == tmp_path / "data"
    assert loaded.output_dir == Path("runs")  # the working directory's, like lm-eval's output_path


def test_fingerprint_of_an_existing_config_is_unchanged():
    """A run folder resumes only into the same experiment. This config hashed to
    98441adc45e86841 on main (2026-12-01) and resumed across `pretrained`, `preset: mat`, the
    network registry and the composite attacks; since 2026-12-02 the fingerprint also hashes what
    its agent's `config` resolves to (the default changed that day: no chain of thought), so it
    hashes to a new value, pinned here so that it cannot change unnoticed again. On 2026-12-06 the
    default fusion weights became the baseline's (0.6 / 0.4 -> 0.5 / 0.5) and it changed again:
    agent links ranked the old way must not resume into a run ranking the new way. Later that day
    the default decided by the shipped generic head (`decision.head: auto`) and the fingerprint
    hashes that head's file: it changed once more."""
    cfg = load_eval_config(
        {
            "name": "fp",
            "dataset": {"key": "demo", "split": "test"},
            "kb": {"path": "/data/kb"},
            "pipelines": [
                {"name": "b", "kind": "baseline"},
                {"name": "a", "kind": "agent", "overrides": {"search": {"enabled": False}}},
            ],
            "attacks": [
                {"name": "pgd-8", "attack": "pgd", "params": {"eps": "8/255"}},
                {"name": "aware", "attack": "pgd_detector_aware", "params": {"threshold": 1.2}, "surrogate": "efficientnet_lite1"},
            ],
            "settings": ["it2t", {"name": "noisy", "setting": "it2t", "text": {"kind": "char_noise"}}],
        }
    )
    assert cfg.fingerprint() == "5faa2a526d5abde7"
    # i2t is image only now, so a run made when it kept the mention does not resume into a mix
    i2t = load_eval_config({**cfg.model_dump(mode="json"), "settings": ["it2t", "i2t"]})
    assert i2t.fingerprint() != "eea0b672a506a355"


def test_fingerprint_follows_what_the_named_preset_resolves_to(tmp_path, monkeypatch):
    """`config: default` (or none) names a preset whose content can change; a run made before
    the change must refuse to resume rather than mix records of two different agents. Where the
    checkout and the cache live does not count: the same run hashes alike on another machine."""
    import retlink.agent.config as config
    import retlink.eval.config as eval_config

    cfg = load_eval_config(small_config(tmp_path / "kb", tmp_path / "a"))
    before = cfg.fingerprint()
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "default.yaml").write_text((config.PRESET_DIR / "default.yaml").read_text())
    monkeypatch.setattr(config, "PRESET_DIR", presets)
    monkeypatch.setattr(eval_config, "PRESET_DIR", presets)  # the checkout is elsewhere now
    # the preset's own paths resolve under its new folder: only the folder moved, so the same hash
    assert load_eval_config(small_config(tmp_path / "kb", tmp_path / "a")).fingerprint() == before
    monkeypatch.setenv("RETLINK_CACHE", str(tmp_path / "other-cache"))
    assert load_eval_config(small_config(tmp_path / "kb", tmp_path / "a")).fingerprint() == before
    # the same name, another agent: the default cuts candidate descriptions shorter
    (presets / "default.yaml").write_text((presets / "default.yaml").read_text() + "reasoner: {prompt: {description_chars: 50}}\n")
    assert load_eval_config(small_config(tmp_path / "kb", tmp_path / "a")).fingerprint() != before


def test_fingerprint_ignores_output_and_concurrency_only(tmp_path):
    a = load_eval_config(small_config(tmp_path / "kb", tmp_path / "a"))
    b = load_eval_config(small_config(tmp_path / "kb", tmp_path / "b", concurrency=4))
    c = load_eval_config(small_config(tmp_path / "kb", tmp_path / "a", seed=3))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    # more samples extend the run (as --limit does); which samples (the split) is another run
    more = load_eval_config(small_config(tmp_path / "kb", tmp_path / "a", dataset={"key": "demo", "split": "test", "limit": 9}))
    other_split = load_eval_config(small_config(tmp_path / "kb", tmp_path / "a", dataset={"key": "demo", "split": "train", "limit": 3}))
    assert more.fingerprint() == a.fingerprint() != other_split.fingerprint()
    assert fraction_text(8 / 255) == "8/255" and fraction_text(0.1) == "0.1"


def test_record_log_cuts_a_torn_tail_and_last_record_wins(tmp_path):
    path = tmp_path / "r.jsonl"
    with RecordLog(path) as log:
        log.append({"key": "a", "v": 1})
        log.append({"key": "b", "v": 1})
    with path.open("a") as fh:
        fh.write('{"key": "c", "v"')  # killed mid-write
    assert set(read_records(path)) == {"a", "b"}
    with RecordLog(path) as log:  # reopening cuts the torn record
        log.append({"key": "a", "v": 2})
    assert path.read_text().count("\n") == 3
    assert read_records(path) == {"a": {"key": "a", "v": 2}, "b": {"key": "b", "v": 1}}


def test_gold_rank_and_settings():
    from retlink.core.types import Candidate, Entity, LinkResult
    from retlink.datasets import Sample
    from retlink.eval.config import SettingSpec

    def result(answer, ids):
        ents = {i: Entity(id=i, name=i) for i in ids}
        return LinkResult(
            entity=ents.get(answer),
            score=0.5,
            decided_by="reasoner",
            mention="m",
            candidates=[Candidate(entity=ents[i], score=0.5) for i in ids],
        )

    assert gold_rank(result("b", ["a", "b", "c"]), "b") == 1  # the answer, not the top candidate
    assert gold_rank(result("b", ["a", "b", "c"]), "a") == 2
    assert gold_rank(result("b", ["a", "b", "c"]), "c") == 3
    assert gold_rank(result(None, ["a", "b"]), "NIL") == 1
    assert gold_rank(result("a", ["a"]), "z") is None

    s = Sample(id="demo:x", image_path=None, mention="Java", context="a cup of [Java] today", gold_id="j", split="t")
    assert link_inputs(s, SettingSpec(name="it2t", setting="it2t"), "IMG", 0) == ("IMG", "Java", s.context)
    assert link_inputs(s, SettingSpec(name="i2t", setting="i2t"), "IMG", 0) == ("IMG", "", "")  # image only
    assert link_inputs(s, SettingSpec(name="m", setting="i2t_mention"), "IMG", 0) == ("IMG", "Java", "")
    assert link_inputs(s, SettingSpec(name="t", setting="text_only"), "IMG", 0) == (None, "Java", s.context)
    noisy = SettingSpec(name="n", setting="it2t", text={"kind": "word_permutation"})
    _, _, ctx = link_inputs(s, noisy, "IMG", 0)
    assert ctx != s.context and sorted(ctx.split()) == sorted(s.context.split())
    assert link_inputs(s, noisy, "IMG", 0) == link_inputs(s, noisy, "IMG", 0)  # seeded


def test_fingerprint_changes_with_the_head_file_not_only_its_path(tmp_path):
    """A head retrained in place (same path, new weights) must not resume into the old run's
    records: the fingerprint hashes the head file's content."""
    head = tmp_path / "kb.logos.head.json"
    head.write_text('{"weights": [1.0]}')
    cfg = small_config(tmp_path / "kb", tmp_path / "runs")
    cfg["pipelines"][1]["overrides"]["decision"] = {"head": str(head)}
    before = load_eval_config(cfg).fingerprint()
    assert load_eval_config(cfg).fingerprint() == before
    head.write_text('{"weights": [2.0]}')
    assert load_eval_config(cfg).fingerprint() != before


def test_attacks_through_a_resample_hash_with_its_gradient_version(monkeypatch):
    """The purifier's BPDA took the identity as a resample's gradient until 2026-12-07, a weaker
    attack than today's: a run made then must not resume into one made now. Attacks that never
    meet a resample keep their fingerprint."""
    import retlink.eval.config as config

    def cfg(purify):
        attack = {"name": "eot", "attack": "pgd_eot", "params": {"eps": "8/255", "purify": purify}}
        return load_eval_config(
            {"name": "fp", "dataset": {"key": "demo", "split": "test"}, "kb": {"path": "/data/kb"},
             "pipelines": [{"name": "b", "kind": "baseline"}], "attacks": [attack]}
        )

    resample = cfg([{"kind": "resample", "scale": 0.5}, {"kind": "jpeg", "quality": 75}])
    jpeg = cfg([{"kind": "jpeg", "quality": 75}])
    now = resample.fingerprint(), jpeg.fingerprint()
    monkeypatch.setattr(config, "RESAMPLE_GRADIENT", 1)
    assert resample.fingerprint() != now[0]
    assert jpeg.fingerprint() == now[1]
