"""A real local Ray cluster for tests and benches: `ray start --head --block` on 127.0.0.1.

Run in the foreground (`--block`) in its own process group, so stopping it ends exactly the
processes it started (the head's GCS, raylet and workers), never another user's Ray: SIGTERM to
the `ray start` process (it tears its cluster down), then SIGKILL to its group if anything is
left. Temp files go to a short folder of its own (Ray's socket paths must stay short).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.loopback import free_port
from tests.waiting import wait_until


class RayCluster:
    """`with RayCluster(num_cpus=2) as c: ray.init(address=c.address)`."""

    def __init__(self, num_cpus: int = 2, ready_timeout_s: float = 180.0) -> None:
        self.num_cpus = num_cpus
        self.port = free_port()
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.temp = Path(tempfile.mkdtemp(prefix="rlray-", dir="/tmp"))
        self.log = self.temp / "ray-start.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RayCluster:
        ray_cli = Path(sys.executable).with_name("ray")
        cmd = [
            str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
            "--port", str(self.port), "--num-cpus", str(self.num_cpus), "--num-gpus", "0",
            "--include-dashboard", "false", "--include-log-monitor", "false", "--disable-usage-stats",
            "--object-store-memory", str(200 * 1024 * 1024), "--temp-dir", str(self.temp),
        ]  # fmt: skip
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
            )
        tail = lambda: self.log.read_text(errors="replace")[-2000:]  # noqa: E731

        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"ray start exited with {self.proc.returncode}: {tail()}")
            return "Ray runtime started" in self.log.read_text(errors="replace")

        try:
            wait_until(started, "ray start", self.ready_timeout_s, interval_s=0.5, detail=tail)
        except AssertionError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of its group is left
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
