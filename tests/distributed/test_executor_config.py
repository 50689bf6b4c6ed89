"""The `executor:` block and `--ray`: validated at load, out of the fingerprint, and a Ray run
without ray installed is a clear error before anything is written (no cluster needed here)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from retlink.core.errors import ConfigError
from retlink.eval.config import ExecutorSpec, load_eval_config
from retlink.eval.runner import Runner
from tests.conftest import REPO
from tests.evalrun.evalrun_helpers import small_config


def test_executor_defaults_to_local_and_stays_out_of_the_fingerprint(tmp_path):
    base = load_eval_config(small_config(tmp_path / "kb", tmp_path))
    assert base.executor.kind == "local"
    on_ray = load_eval_config(
        small_config(tmp_path / "kb", tmp_path, executor={"kind": "ray", "actors": 4, "num_cpus": 2, "num_gpus": 0.5})
    )
    assert on_ray.executor.actors == 4 and on_ray.executor.num_gpus == 0.5
    assert on_ray.fingerprint() == base.fingerprint()  # a run resumes on either executor


@pytest.mark.parametrize(
    ("executor", "message"),
    [
        ({"kind": "local", "address": "10.0.0.1:6379"}, "executor: .*address: only for kind: ray"),
        ({"kind": "dask"}, "executor.kind"),
        ({"kind": "ray", "actors": 0}, "executor.actors"),
        ({"kind": "ray", "num_gpus": -1}, "executor.num_gpus"),
        ({"kind": "ray", "actorz": 2}, "executor.actorz"),
    ],
)
def test_bad_executor_blocks_are_config_errors_naming_the_key(tmp_path, executor, message):
    with pytest.raises(ConfigError, match=message):
        load_eval_config(small_config(tmp_path / "kb", tmp_path, executor=executor))


def test_on_ray_switches_the_kind_and_keeps_the_configured_block(tmp_path):
    cfg = load_eval_config(small_config(tmp_path / "kb", tmp_path, executor={"kind": "ray", "address": "h:1", "actors": 3}))
    assert cfg.on_ray(None).executor == cfg.executor
    local = load_eval_config(small_config(tmp_path / "kb", tmp_path))
    moved = local.on_ray("127.0.0.1:6379").executor
    assert (moved.kind, moved.address, moved.actors) == ("ray", "127.0.0.1:6379", 1)
    assert local.on_ray(None).executor.address is None


def test_fault_injection_ray_missing_is_a_config_error_before_the_run_folder(tmp_path, monkeypatch):
    # injected fault: ray is not importable (sys.modules[name] = None makes `import ray` fail)
    monkeypatch.setitem(sys.modules, "ray", None)
    cfg = load_eval_config(small_config(tmp_path / "kb", tmp_path / "runs", executor={"kind": "ray"}))
    runner = Runner(cfg)
    monkeypatch.setattr(Runner, "plan", lambda self, limit=None: _one_job_plan(cfg))
    with pytest.raises(ConfigError, match=r"needs the ray package: pip install"):
        runner.run(progress=False)
    assert not runner.dir.exists()


def _one_job_plan(cfg):
    from retlink.datasets import load_dataset
    from retlink.eval.runner import Job, Plan

    sample = next(iter(load_dataset("demo").samples("test")))
    return Plan([sample], [("it2t", "clean")], [Job(sample, "baseline", cfg.settings[0], "clean")])


def test_the_local_executor_never_imports_ray():
    code = (
        "import sys; import retlink.eval.runner, retlink.eval.cli, retlink.eval.config; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1000:]


def test_documented_executor_example_validates():
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", (REPO / "docs" / "evaluation.md").read_text(), flags=re.S)]
    executors = [b["executor"] for b in blocks if isinstance(b, dict) and "executor" in b]
    assert executors, "docs/evaluation.md has no executor example"
    for block in executors:
        assert ExecutorSpec.model_validate(block).kind == "ray"
