"""The trained decision head: fitting, calibration bookkeeping, persistence and refusal of a head
fitted for another KB; then `retlink train` end to end on demo links made by the eval runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from retlink.agent.decision import DecisionHead
from retlink.agent.decision.features import FEATURES, NIL_FEATURES, pool_features
from retlink.core.errors import ConfigError
from retlink.core.types import Candidate, Entity
from tests.core.head_groups import synthetic_groups


def test_fit_learns_the_informative_signal_and_nil():
    train, test = synthetic_groups(300, 0, nil_every=5), synthetic_groups(200, 1, nil_every=5)
    head = DecisionHead.fit(train, list(FEATURES), list(NIL_FEATURES), l2=1e-3)
    assert int(np.argmax(np.abs(head.weights))) == 0 and head.weights[0] > 0
    held = head.evaluate(test)
    assert held["accuracy"] >= 0.85, held
    assert held["ece"] < 0.1, held  # maximum likelihood: calibrated on held-out links
    nil_links = [g for g in test if g.gold == 6]
    assert head.evaluate(nil_links)["accuracy"] >= 0.7


def test_save_load_roundtrip_and_refusals(tmp_path):
    fp = {"source_sha256": "abc", "count": 3, "text_model": "m", "image_model": "i"}
    head = DecisionHead.fit(synthetic_groups(60, 2), list(FEATURES), list(NIL_FEATURES), fingerprint=fp)
    path = head.save(tmp_path / "h.json")
    again = DecisionHead.load(path, features=FEATURES, fingerprint=fp)
    g = synthetic_groups(1, 3)[0]
    ids = [f"e{i}" for i in range(6)]
    assert again.distribution(ids, g.rows, g.nil) == pytest.approx(head.distribution(ids, g.rows, g.nil))
    with pytest.raises(ConfigError, match=r"another KB or embedder.*count"):
        DecisionHead.load(path, features=FEATURES, fingerprint={**fp, "count": 4})
    with pytest.raises(ConfigError, match=r"another KB or embedder.*image_model"):
        DecisionHead.load(path, features=FEATURES, fingerprint={**fp, "image_model": "efficientnet_lite1"})
    with pytest.raises(ConfigError, match="fitted on features"):
        DecisionHead.load(path, features=(*FEATURES, "new"), fingerprint=fp)
    with pytest.raises(ConfigError, match="no head at"):
        DecisionHead.load(tmp_path / "missing.json", features=FEATURES)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable head"):
        DecisionHead.load(tmp_path / "bad.json", features=FEATURES)


def test_reasoner_weight_is_fitted_and_zero_when_the_reasoner_is_noise():
    groups = synthetic_groups(200, 4)
    head = DecisionHead.fit(groups, list(FEATURES), list(NIL_FEATURES))
    ids = [[f"e{i}" for i in range(6)] for _ in groups]
    rng = np.random.default_rng(0)
    noise = [{k: float(v) for k, v in zip([*i, "NIL"], rng.dirichlet(np.ones(7)), strict=True)} for i in ids]
    assert head.fit_reasoner_weight(groups, noise, ids, ids) == 0.0
    oracle = [{k: (0.9 if j == g.gold else 0.1 / 6) for j, k in enumerate([*i, "NIL"])} for g, i in zip(groups, ids, strict=True)]
    assert head.fit_reasoner_weight(groups, oracle, ids, ids) > 0.5


def test_pool_features_are_relative_within_a_link():
    pool = [
        Candidate(entity=Entity(id="a", name="A"), score=0.8, text_score=0.6, image_score=0.9, alias_match=True, caption_score=0.4),
        Candidate(entity=Entity(id="b", name="B"), score=0.5, text_score=0.7, image_score=None),
    ]
    f = pool_features(pool, detector_score=0.5)
    rows = dict(zip(f.ids, f.rows, strict=True))
    col = {name: i for i, name in enumerate(f.names)}
    assert rows["a"][col["mention_gap"]] == pytest.approx(-0.1) and rows["b"][col["mention_gap"]] == 0.0
    assert rows["b"][col["has_image"]] == 0.0 and rows["b"][col["image_gap"]] == 0.0
    assert rows["a"][col["fused_gap"]] == 0.0 and rows["b"][col["fused_gap"]] == pytest.approx(-0.3)
    assert f.nil == [0.7, 0.9, 1.0, 0.8]


@pytest.mark.slow
def test_retlink_train_end_to_end_then_the_agent_uses_the_head(tmp_path, demo_kb_path):
    """Runner links (clean + augment + 2-step PGD) on demo samples, fit, reload in the agent,
    refuse the head once the fingerprint does not match."""
    from retlink import Linker
    from retlink.cli import app

    cfg = {
        "name": "demo-head",
        "pipelines": ["agent-retrieval"],
        "out": str(tmp_path / "head.json"),
        "folds": 2,
        "eval": {
            "name": "demo-train",
            "dataset": {"key": "demo", "split": "test", "limit": 6},
            "kb": {"path": str(demo_kb_path)},
            "pipelines": [{"name": "agent-retrieval", "kind": "agent", "overrides": {"reasoner": {"enabled": False}}}],
            "attacks": [
                {"name": "view-1", "attack": "augment"},
                {"name": "pgd-2", "attack": "pgd", "params": {"eps": "8/255", "alpha": "4/255", "steps": 2}},
            ],
            "output_dir": str(tmp_path / "runs"),
        },
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", str(path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "head.json").read_text())
    assert data["metrics"]["links"] >= 12 and data["metrics"]["by_condition"] == {"clean": 6, "view-1": 6, "pgd-2": 6}
    assert data["fingerprint"]["count"] > 0 and data["metrics"]["cross_validated"]["n"] > 0
    agent_cfg = {"kb": {"path": str(demo_kb_path)}, "reasoner": {"enabled": False}, "decision": {"head": str(tmp_path / "head.json")}}
    result = Linker.from_config(agent_cfg).link(
        "src/retlink/data/demo/images/rocket.jpg",
        mention="Falcon",
        context="The [Falcon] climbed away from the launch pad carrying a space weather satellite.",
    )
    assert result.decided_by == "head" and result.candidates[0].prior is not None
    assert sum(c.prior for c in result.candidates) <= 1.0 + 1e-6
    data["fingerprint"]["count"] += 1
    (tmp_path / "head.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="another KB or embedder"):
        Linker.from_config(agent_cfg)
    # a split the dataset does not have is a clear error, before anything runs
    cfg["eval"]["dataset"]["split"] = "dev"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", str(path)])
    assert res.exit_code == 2 and "no split 'dev'" in res.output
