"""Comparing two eval runs that should agree: the same answers, and the same scores up to float noise.

Two runs of one config agree exactly in what they decide (predicted id, NIL, ranks, keys, every
discrete field) but not always in the last digits of their float scores: runs in different
processes (a Ray worker on 1 torch thread, the local runner on 2; a resumed run in a fresh
process) sum their reductions in another order, and a score of 0.5848 against 0.5849 is the
same answer. So floats are compared within `tol`, everything else exactly. Timings always
differ and are left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from retlink.eval.report import comparable
from retlink.eval.runs import RESULTS

#: what legitimately differs between two runs of the same config: timings
TIMINGS = frozenset({"seconds", "nodes", "attack_seconds"})


def run_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """{key: record without timings} of a run folder; fails on a key recorded twice."""
    out: dict[str, dict[str, Any]] = {}
    for line in (Path(run_dir) / RESULTS).read_text().splitlines():
        rec = json.loads(line)
        assert rec["key"] not in out, f"{rec['key']} recorded twice"
        out[rec["key"]] = {k: v for k, v in rec.items() if k not in TIMINGS}
    return out


def differences(a: Any, b: Any, tol: float, where: str = "") -> list[str]:
    """Where `a` and `b` differ: floats by more than `tol`, anything else at all (a bool is
    never a float here, and an int only matches an int: ranks and counts are exact)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return []
        return [] if abs(a - b) <= tol else [f"{where}: {a!r} != {b!r} (tol {tol})"]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b))} in one only"]
        return [d for k in sorted(a) for d in differences(a[k], b[k], tol, f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, tol, f"{where}[{i}]")]
    if type(a) is not type(b) or a != b:
        return [f"{where}: {a!r} != {b!r}"]
    return []


def assert_same_results(a: Path, b: Path, tol: float = 1e-3) -> None:
    """The records of run folders `a` and `b` agree: same keys, every discrete field identical,
    float scores within `tol`; timings ignored."""
    ra, rb = run_records(a), run_records(b)
    assert set(ra) == set(rb), f"keys in one run only: {sorted(set(ra) ^ set(rb))}"
    diffs = [d for key in sorted(ra) for d in differences(ra[key], rb[key], tol, key)]
    assert not diffs, "records differ:\n" + "\n".join(diffs[:20])


def assert_same_summary(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-3) -> None:
    """Two report summaries agree apart from timings: counts exact, floats within `tol`."""
    diffs = differences(comparable(a), comparable(b), tol, "summary")
    assert not diffs, "summaries differ:\n" + "\n".join(diffs[:20])


def hand_record(
    sample_id: str, pipeline: str, setting: str, attack: str, correct: bool, *,
    error: bool = False, wrong_rank: int | None = None,
) -> dict[str, Any]:
    """One hand-made record: right (`pred` = gold `g`, rank 1), wrong (`pred` `x`, rank
    `wrong_rank`) or, with `error`, a failed link (a miss, as the runner records one)."""
    from retlink.eval.runs import record_key

    rec = {
        "key": record_key(sample_id, pipeline, setting, attack),
        "sample_id": sample_id,
        "pipeline": pipeline,
        "setting": setting,
        "attack": attack,
        "gold": "g",
        "status": "error" if error else "ok",
        "pred": "g" if correct else "x",
        "correct": bool(correct),
        "rank": 1 if correct else (None if error else wrong_rank),
        "seconds": 0.1,
    }
    if error:
        rec["error"] = "RuntimeError: injected failure"
    return rec


def write_hand_run(folder: Path, cfg: Any, sample_ids: list[str], records: list[dict[str, Any]]) -> Path:
    """A run folder (run.json for `cfg`, results.jsonl) holding exactly `records`, for report
    tests that need records no real run would give so cheaply."""
    from retlink.eval.runs import RUN_META

    meta = {"name": cfg.name, "fingerprint": cfg.fingerprint(), "config": cfg.model_dump(mode="json"), "samples": sample_ids}
    (folder / RUN_META).write_text(json.dumps(meta))
    (folder / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder
