"""The defence evaluation: the graph's own routes, worst case over adaptive attacks, the report,
the CLI, and a runner config naming the adaptive attacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from retlink.config import DefenceConfig
from retlink.errors import ConfigError
from retlink.eval.defences import (
    ADAPTIVE,
    CLEAN,
    NON_ADAPTIVE,
    DefenceEvalConfig,
    adaptive_attacks,
    conditions,
    defended_view,
    evaluate,
    load_defence_config,
    report_markdown,
    roc_auc,
    summarise,
)
from retlink.tools.vision.detector import SqueezeDetector
from retlink.tools.vision.efficientnet import shared_model
from tests.conftest import fast_config


def test_roc_auc_and_worst_case_by_hand():
    assert roc_auc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert roc_auc([0.1, 0.4], [0.2, 0.4]) == pytest.approx(0.625)  # 2 wins, 1 loss, 1 tie of 4 pairs
    correct = {
        CLEAN: [True, True, True],
        NON_ADAPTIVE: [True, False, True],
        "a": [False, False, True],
        "b": [True, True, False],
    }
    flagged = {k: [False, True, False] for k in correct}
    flagged["a"] = [False, False, False]
    cells = conditions(correct, flagged, ["a", "b"])
    assert cells[ADAPTIVE].correct == [False, False, False]  # any attack that breaks a sample counts
    assert cells[ADAPTIVE].flagged == [False, False, False]  # PGD broke sample 1 flagged, "a" unflagged
    assert cells[NON_ADAPTIVE].correct == [True, False, True]


def test_adaptive_attacks_follow_the_defence_config():
    assert adaptive_attacks(DefenceConfig(), 4) == []
    purify = DefenceConfig.model_validate({"purify": [{"kind": "median", "size": 3}]})
    assert [n for n, _ in adaptive_attacks(purify, 4)] == ["pgd_eot"]
    detect = DefenceConfig.model_validate({"detector": {"enabled": True, "threshold": 0.9}})
    (aware, aware_kw), (eot, eot_kw) = adaptive_attacks(detect, 4)
    assert aware == "pgd_detector_aware" and aware_kw["purify"] == [] and aware_kw["threshold"] == 0.9
    assert eot == "pgd_eot" and eot_kw["purify"][0]["kind"] == "jpeg"  # the flagged route's purifier


def test_defended_view_takes_the_graph_route(demo_dir):
    img = Image.open(demo_dir / "images" / "coffee.jpg").convert("RGB").resize((224, 224))
    cfg = DefenceConfig.model_validate({"detector": {"enabled": True, "threshold": 0.0}})
    view = defended_view(img, cfg, SqueezeDetector(shared_model(), cfg.detector.squeezers))
    assert view.flagged and view.score > 0 and view.image.tobytes() != img.tobytes()  # purified
    off = defended_view(img, DefenceConfig(), None)
    assert not off.flagged and off.score is None and off.image is img


@pytest.mark.parametrize("target", ["embedding_toward_distractor", "classifier"])
def test_evaluate_end_to_end_on_two_photos(demo_kb_path, target):
    res = evaluate(
        {
            "limit": 2,
            "target": target,
            "params": {"steps": 1},
            "eot_samples": 1,
            "bootstrap_resamples": 20,
            "agent": fast_config(demo_kb_path),
        }
    )
    model = res.levels["model"]
    assert set(res.levels) == {"model", "retrieval"}  # the demo KB has images
    assert set(model) == {"none", "purify", "detect", "purify+detect"}
    assert res.levels["retrieval"]["none"][CLEAN].correct == [True, True]  # gold entity retrieved
    assert model["none"][CLEAN].correct == [True, True]  # the reference label is its own clean label
    assert model["none"][ADAPTIVE].correct == model["none"][NON_ADAPTIVE].correct  # nothing to adapt to
    for cells in model.values():  # adaptive is never kinder than plain PGD
        assert all(a <= p for a, p in zip(cells[ADAPTIVE].correct, cells[NON_ADAPTIVE].correct, strict=True))
    rows = {r["defence"]: r for r in summarise(res, "model", resamples=20)}
    assert rows["none"]["clean_cost"] == 0
    assert res.detector["threshold"] == 1.2 and 0 <= res.detector["roc_auc_pgd"] <= 1
    md = report_markdown(res)
    assert "| purify+detect |" in md and "ROC AUC" in md and "in-sample" in md
    assert "### retrieval level (KB image retrieval top-1 vs the gold entity)" in md
    assert ("image embedding" in md) == (target != "classifier")


def test_defence_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "d.yaml"
    bad.write_text("eot_sample: 3\n")
    with pytest.raises(ConfigError, match="eot_sample: unknown key"):
        load_defence_config(bad)
    cfg = load_defence_config(None, limit=3, links=False, target="classifier")
    assert isinstance(cfg, DefenceEvalConfig) and cfg.limit == 3 and cfg.target == "classifier"
    with pytest.raises(ConfigError, match="target"):
        load_defence_config(None, target="captioner")
    runner_config = Path(__file__).resolve().parents[2] / "eval" / "configs" / "defences.yaml"
    with pytest.raises(ConfigError, match="retlink eval run"):
        load_defence_config(runner_config)


def test_runner_config_can_name_the_adaptive_attacks():
    from retlink.eval.config import load_eval_config

    cfg = load_eval_config(
        {
            "name": "defences",
            "dataset": {"key": "demo"},
            "kb": {"path": "/tmp/kb"},
            "pipelines": [
                {
                    "name": "agent-detect",
                    "kind": "agent",
                    "overrides": {"defence": {"detector": {"enabled": True}}},
                }
            ],
            "attacks": [
                {
                    "name": "eot",
                    "attack": "pgd_eot",
                    "target": "classifier",
                    "params": {"purify": [{"kind": "jpeg", "quality": 75}], "eot_samples": 2},
                },
                {
                    "name": "aware",
                    "attack": "pgd_detector_aware",
                    "target": "embedding_away",
                    "params": {"threshold": 1.2},
                },
            ],
        }
    )
    assert cfg.attack("eot").resolved_params()["eot_samples"] == 2
    with pytest.raises(ConfigError, match="eot_samplez"):
        load_eval_config(
            {
                **cfg.model_dump(mode="json"),
                "attacks": [{"name": "x", "attack": "pgd_eot", "params": {"eot_samplez": 1}}],
            }
        )


def test_cli_writes_the_defence_report(tmp_path, demo_kb_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from retlink.cli import app

    cfg = tmp_path / "defences.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "params": {"steps": 1},
                "eot_samples": 1,
                "bootstrap_resamples": 20,
                "defences": [
                    {"name": "none"},
                    {"name": "purify", "defence": {"purify": [{"kind": "median", "size": 3}]}},
                ],
                "agent": fast_config(demo_kb_path),
            }
        )
    )
    out = tmp_path / "report"
    res = CliRunner().invoke(
        app, ["eval", "defences", str(cfg), "-n", "1", "--target", "classifier", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    data = json.loads((out / "defences.json").read_text())
    assert data["config"]["target"] == "classifier" and data["samples"] == ["ex01"]
    assert set(data["levels"]) == {"model", "retrieval"} and "pgd_eot" in "".join(data["attacks"]["params"])
    assert "retrieval level" in (out / "defences.md").read_text()
    bad = CliRunner().invoke(app, ["eval", "defences", str(cfg), "--target", "caption"])
    assert bad.exit_code == 2 and "target" in bad.output


def test_evaluate_attacks_the_configured_surrogate(demo_kb_path):
    res = evaluate(
        {
            "limit": 2,
            "surrogate": "efficientnet_lite1",
            "params": {"steps": 1},
            "eot_samples": 1,
            "bootstrap_resamples": 20,
            "agent": fast_config(demo_kb_path),
        }
    )
    assert res.config["surrogate"] == "efficientnet_lite1"
    params = res.attacks["params"]
    assert params and all(p["surrogate"] == "efficientnet_lite1" for p in params.values())
    # the agent's tagger is still Lite0, so the detector-aware attack squeezes on Lite0 by name
    aware = next(k for k in res.attacks["by_defence"]["detect"] if k.startswith("pgd_detector_aware"))
    assert params[aware]["classifier"] == "efficientnet_lite0"
    assert res.levels["model"]["none"][CLEAN].correct == [True, True]  # labels: the agent's tagger's own
    assert "surrogate `efficientnet_lite1`" in report_markdown(res)
    cfg = load_defence_config(None, surrogate="efficientnet_lite0+efficientnet_lite1")
    assert cfg.surrogate == "efficientnet_lite0+efficientnet_lite1"
    with pytest.raises(ConfigError, match="surrogate"):
        load_defence_config({"surrogate": "resnet50"})
