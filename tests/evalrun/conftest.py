"""Shared pieces of the eval-runner tests: a small real config on the demo data and real
pipelines built once per session (the agent's models are real and slow on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest
from evalrun_helpers import small_config


@pytest.fixture(scope="session")
def eval_pipelines(demo_kb_path):
    """The two pipelines of `small_config`, built once and shared by every run of the session."""
    from retlink.eval.config import load_eval_config
    from retlink.eval.pipelines import build_pipeline

    cfg = load_eval_config(small_config(demo_kb_path, Path("unused")))
    return {p.name: build_pipeline(p, demo_kb_path) for p in cfg.pipelines}
