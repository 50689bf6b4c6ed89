"""CLI numbers and network waits (issue 32, defects 3, 5, 11): refused in one line, exit 2, fast."""

from __future__ import annotations

import socket
import time

import pytest

from tests.hostile.common import DEMO_CONFIG, assert_refused, run_cli


@pytest.mark.parametrize("k", ["0", "-1", str(10**30)])
def test_kb_query_k_is_range_checked(tmp_path, k):
    assert_refused(run_cli("kb", "query", str(tmp_path), "falcon", "-k", k))


def test_mate_workers_are_bounded_by_cores(tmp_path):
    out = tmp_path / "D"
    assert_refused(run_cli("mate", "build", "--out", str(out), "--n", "2", "--workers", "100000"), "--workers")
    assert list(tmp_path.iterdir()) == []  # no D, no D.partial


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_eval_run_on_an_unreachable_ray_address_fails_fast_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    started = time.monotonic()
    res = run_cli("eval", "run", str(DEMO_CONFIG), "--limit", "1", "--out", str(out),
                  "--ray-address", f"127.0.0.1:{_closed_port()}", timeout=180)
    assert_refused(res, "Ray cluster")
    assert time.monotonic() - started < 120
    assert not out.exists()


@pytest.mark.parametrize("kind", ["under_file", "proc"])
def test_eval_and_mate_out_that_cannot_be_written(tmp_path, kind):
    (tmp_path / "file").write_text("x")
    out = str(tmp_path / "file" / "d") if kind == "under_file" else "/proc/retlink-out"
    assert_refused(run_cli("eval", "run", str(DEMO_CONFIG), "--dry-run", "--out", out))
    assert_refused(run_cli("mate", "build", "--out", out, "--n", "2"))
    assert_refused(run_cli("data", "build", "logos", "--out", out, "--limit", "2"))
