"""Every config the package ships loads and validates completely with the project's own loaders:
each eval, train and MATE YAML under `retlink/eval/configs/` and each agent preset. A config
that drifts from the schema (a renamed key, a moved module, a bad attack parameter) fails here,
not on the first run that uses it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from retlink.agent.config import load_config

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "retlink"
CONFIGS = sorted((PACKAGE / "eval" / "configs").rglob("*.yaml"))
PRESETS = sorted((PACKAGE / "agent" / "presets").glob("*.yaml"))


def kind(path: Path) -> str:
    """Which loader a bundled YAML is for: train configs live in train/, MATE runs name a
    `data` set, everything else is an eval run."""
    if path.parent.name == "train":
        return "train"
    return "mate" if "data" in yaml.safe_load(path.read_text()) else "eval"


@pytest.fixture(autouse=True)
def data_folder(monkeypatch):
    """The published datasets' configs read `$RETLINK_DATA` (unset, loading them is an error that
    says so: tests/evalrun/test_paper_table.py); the fixtures' folder stands in."""
    monkeypatch.setenv("RETLINK_DATA", str(PACKAGE.parents[1] / "tests" / "fixtures" / "datasets"))


def test_the_configs_are_found():
    assert len(CONFIGS) >= 30 and len(PRESETS) >= 3
    assert {kind(p) for p in CONFIGS} == {"eval", "train", "mate"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(PACKAGE / "eval" / "configs")))
def test_bundled_config_validates(path: Path):
    which = kind(path)
    if which == "train":
        from retlink.train import config_kind, load_train_config

        if config_kind(path) == "encoder":
            from retlink.train.encoder import load_encoder_config

            assert load_encoder_config(path).objective in ("fare", "mat")
            return
        train, evals = load_train_config(path)
        assert evals and all(e.pipelines for e in evals) and train is not None
    elif which == "mate":
        from retlink.mate.harness import load_mate_config

        assert load_mate_config(path).name
    else:
        from retlink.eval.config import load_eval_config
        from retlink.eval.pipelines import agent_config

        cfg = load_eval_config(path)
        assert cfg.pipelines
        for spec in cfg.pipelines:  # every agent pipeline's resolved agent config validates too
            if spec.kind == "agent":
                assert agent_config(spec) is not None


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_agent_preset_validates(path: Path):
    by_name = load_config(path.stem)
    assert by_name == load_config(path)
