"""The eval runner on a real local Ray cluster (`ray start --head` on 127.0.0.1, 2 CPUs): the
same records as the local executor's, also when an actor is killed mid-run.

Cheap on purpose (Ray workers load the models again, on 2 shared cores): the baseline pipeline,
3 demo samples, clean + FGSM, so 6 links a run.
"""

from __future__ import annotations

import json

import pytest

from retlink.eval.config import load_eval_config
from retlink.eval.report import comparable, write_report
from retlink.eval.runner import Runner
from retlink.eval.runs import RESULTS
from tests.conftest import skip_or_fail
from tests.evalrun.evalrun_helpers import small_config

try:
    import ray
except ImportError:
    skip_or_fail("ray is not installed (pip install 'ray==2.60.0')")

pytestmark = pytest.mark.slow

#: what legitimately differs between two runs of the same config: timings
TIMINGS = ("seconds", "nodes", "attack_seconds")


def cheap_config(kb, out, **extra) -> dict:
    return small_config(
        kb,
        out,
        pipelines=[{"name": "baseline", "kind": "baseline"}],
        attacks=[{"name": "fgsm-8", "attack": "fgsm", "params": {"eps": "8/255"}}],
        **extra,
    )


def records(run_dir) -> dict[str, dict]:
    """{key: record without timings}; fails on a key recorded twice."""
    lines = (run_dir / RESULTS).read_text().splitlines()
    out = {}
    for line in lines:
        rec = json.loads(line)
        assert rec["key"] not in out, f"{rec['key']} recorded twice"
        out[rec["key"]] = {k: v for k, v in rec.items() if k not in TIMINGS}
    return out


@pytest.fixture(scope="module")
def ray_address():
    """A real Ray head on 127.0.0.1 with 2 CPUs; this process is its driver for the module."""
    from tests.ray_cluster import RayCluster

    with RayCluster(num_cpus=2) as cluster:
        ray.init(address=cluster.address, namespace="retlink", log_to_driver=False)
        try:
            yield cluster.address
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, demo_kb_path):
    """The reference: the same config on the local executor."""
    out = tmp_path_factory.mktemp("local")
    runner = Runner(load_eval_config(cheap_config(demo_kb_path, out)))
    runner.run(progress=False)
    return runner.dir


def test_ray_run_makes_the_local_executors_records(tmp_path, demo_kb_path, local_run, ray_address):
    executor = {"kind": "ray", "address": ray_address, "actors": 2, "num_cpus": 1}
    cfg = load_eval_config(cheap_config(demo_kb_path, tmp_path, concurrency=1, executor=executor))
    assert cfg.fingerprint() == load_eval_config(cheap_config(demo_kb_path, tmp_path)).fingerprint()
    runner = Runner(cfg)
    runner.run(progress=False)

    expected = records(local_run)
    assert len(expected) == 6 and all(r["status"] == "ok" for r in expected.values())
    assert records(runner.dir) == expected
    assert comparable(write_report(runner.dir)) == comparable(write_report(local_run))
    # the attacked images were made by Ray tasks into the run folder, like the local ones
    assert sorted(p.name for p in (runner.dir / "attacked" / "fgsm-8").iterdir()) == sorted(
        p.name for p in (local_run / "attacked" / "fgsm-8").iterdir()
    )
    # resuming on Ray finds everything recorded and runs nothing
    assert Runner(cfg).run(progress=False).todo == []


def test_fault_injection_actor_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path, demo_kb_path, local_run, ray_address
):
    executor = {"kind": "ray", "address": ray_address, "actors": 1, "num_cpus": 1}
    runner = Runner(load_eval_config(cheap_config(demo_kb_path, tmp_path, concurrency=2, executor=executor)))
    killed = []

    def kill_the_actor_once(rec: dict) -> None:
        # injected fault: after the first record, the actor holding the other queued links is
        # killed (its process ends, as in an OOM kill or a lost node)
        if not killed:
            handle, _ = runner.executor.actors[0]
            ray.kill(handle, no_restart=True)
            killed.append(rec["key"])

    runner.run(progress=False, on_record=kill_the_actor_once)
    assert killed
    assert runner_stats(runner) == (1, True)
    assert records(runner.dir) == records(local_run)


def runner_stats(runner: Runner) -> tuple[int, bool]:
    """(actors replaced, whether links were queued again) of the run's executor."""
    ex = runner.executor
    return ex.replaced, ex.requeued > 0
