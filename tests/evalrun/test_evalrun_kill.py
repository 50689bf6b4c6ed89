"""A real kill: `retlink eval run` in a subprocess, SIGKILLed mid-run, then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml
from evalrun_helpers import small_config

from retlink.eval.report import write_report
from retlink.eval.runs import RESULTS
from tests.evalruns import assert_same_results, assert_same_summary
from tests.waiting import wait_until


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path, demo_kb_path):
    # baseline only (no LLM): cheap enough to run twice in a subprocess
    cfg = small_config(demo_kb_path, tmp_path / "runs", pipelines=[{"name": "baseline", "kind": "baseline"}])
    cfg["dataset"]["limit"] = 12
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    results = tmp_path / "runs" / "small" / RESULTS
    cmd = [sys.executable, "-m", "retlink.cli", "eval", "run", str(path), "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(
            lambda: proc.poll() is not None or (results.exists() and results.read_text().count("\n") >= 8),
            "8 records before the kill",
            240,
        )
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    killed_at = len(results.read_text().splitlines())
    assert 8 <= killed_at < 36
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    keys = [json.loads(x)["key"] for x in results.read_text().splitlines()]
    assert len(keys) == 36 and len(set(keys)) == 36

    # the uninterrupted reference runs in a fresh process too: this process's torch thread
    # settings, changed by earlier tests, would change the attacks' float reductions and so the
    # measured perturbation norms in their last digits
    ref_path = tmp_path / "ref.yaml"
    ref_path.write_text(yaml.safe_dump({**cfg, "output_dir": str(tmp_path / "ref")}))
    ref = subprocess.run([*cmd[:-2], str(ref_path), "--no-report"], capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    reference = tmp_path / "ref" / "small"
    assert_same_results(results.parent, reference)
    assert_same_summary(write_report(results.parent), write_report(reference))
