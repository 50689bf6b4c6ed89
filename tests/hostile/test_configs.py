"""Eval config numbers and paths checked at load (issue 32, defects 6 and 7)."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from retlink.core.errors import ConfigError
from retlink.eval.config import load_eval_config
from tests.hostile.common import DEMO_CONFIG


def _config(tmp_path, **changes):
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data["kb"] = {"path": str(tmp_path / "kb")}
    data["attacks"] = data.get("attacks") or [{"name": "pgd-8", "attack": "pgd"}]
    for key, value in changes.items():
        if key == "eps":
            data["attacks"][0].setdefault("params", {})["eps"] = value
        else:
            data[key] = value
    return data


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), "-8/255", 0, -1.0])
def test_bad_eps_is_refused_at_load(tmp_path, eps):
    with pytest.raises(ConfigError, match="eps"):
        load_eval_config(_config(tmp_path, eps=eps))


@settings(max_examples=15, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_eps_accepted_only_when_finite_and_positive(tmp_path_factory, eps):
    data = _config(tmp_path_factory.mktemp("c"), eps=eps)
    if math.isfinite(eps) and eps > 0:
        assert load_eval_config(data).attacks[0].eps == eps
    else:
        with pytest.raises(ConfigError):
            load_eval_config(data)


@pytest.mark.parametrize("seed", [-1, 2**32, 10**40])
def test_seed_range(tmp_path, seed):
    with pytest.raises(ConfigError, match="seed"):
        load_eval_config(_config(tmp_path, seed=seed))


def test_kb_path_that_is_a_file_is_refused_at_load(tmp_path):
    data = _config(tmp_path)
    (tmp_path / "kbfile").write_text("x")
    data["kb"] = {"path": str(tmp_path / "kbfile")}
    with pytest.raises(ConfigError, match="is a file"):
        load_eval_config(data)
