"""Regression tests of issue 15: every value of an eval config is checked at load (so by
`--dry-run`), attack parameters and pipeline overrides included, with the file and the key path
named, and a bad config leaves no run folder. Before the fix each of these passed loading and
failed in the middle of the run (a TypeError after the KB was built and linking had begun)."""

from __future__ import annotations

import pytest
import yaml
from evalrun_helpers import small_config
from typer.testing import CliRunner

from retlink.core.errors import ConfigError
from retlink.eval.config import load_eval_config


def config_file(tmp_path, edit) -> tuple:
    cfg = small_config(tmp_path / "kb", tmp_path / "runs")
    edit(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def set_params(**params):
    return lambda cfg: cfg["attacks"][1]["params"].update(params)


def set_overrides(**overrides):
    return lambda cfg: cfg["pipelines"][1]["overrides"].update(overrides)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (set_params(eps="eight"), "attacks[1].params.eps: Input should be a valid number"),
        (set_params(steps="3"), "attacks[1].params.steps: Input should be a valid integer"),
        (set_params(steps=0), "attacks[1].params: steps and restarts must be at least 1"),
        (set_params(norm="L1"), "attacks[1].params: unknown norm 'L1'"),
        (lambda c: c["attacks"][0].update(attack="cw", params={}), "attacks[0].params: CW needs a ClassifierTarget"),
        (set_overrides(reasonr={"llm_weight": 0.2}), "pipelines[1].overrides.reasonr: unknown key"),
        (set_overrides(reasoner={"llm_weight": "high"}), "pipelines[1].overrides.reasoner.llm_weight"),
        (lambda c: c["pipelines"][0].update(options={"top_kk": 3}), "pipelines[0].options.top_kk: unknown key"),
        (lambda c: c["pipelines"][0].update(overrides={"search": {}}), "pipelines[0]: baseline pipelines take"),
        (lambda c: c["dataset"].update(options={"strict": False}), "dataset.options.strict: unknown key"),
        (lambda c: c["dataset"].update(options={"strict_images": "no"}), "dataset.options.strict_images"),
    ],
)
def test_late_errors_are_found_at_load_with_file_and_key_path(tmp_path, edit, expected):
    path, data = config_file(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_eval_config(path)
    assert expected in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ConfigError, match=r"invalid configuration \(dict\)"):
        load_eval_config(data)


def test_every_problem_is_reported_at_once(tmp_path):
    path, _ = config_file(tmp_path, lambda c: (set_params(eps="eight")(c), set_overrides(reasonr={})(c)))
    with pytest.raises(ConfigError) as err:
        load_eval_config(path)
    assert "attacks[1].params.eps" in str(err.value) and "pipelines[1].overrides.reasonr" in str(err.value)


@pytest.mark.parametrize("dry_run", [True, False])
def test_cli_exits_2_and_leaves_no_run_folder(tmp_path, dry_run):
    from retlink.cli import app

    path, _ = config_file(tmp_path, set_overrides(reasonr={"llm_weight": 0.2}))
    res = CliRunner().invoke(app, ["eval", "run", str(path), *(["--dry-run"] if dry_run else [])])
    assert res.exit_code == 2, res.output
    assert "pipelines[1].overrides.reasonr: unknown key" in res.output and "bad.yaml" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "kb").exists()


def test_valid_params_and_overrides_still_load(tmp_path):
    path, _ = config_file(tmp_path, lambda c: (set_params(steps=2, restarts=1)(c), set_overrides(device="cpu")(c)))
    cfg = load_eval_config(path)
    assert cfg.attacks[1].params["steps"] == 2
