"""`retlink mate run` against a real vLLM process serving the tiny random LLaVA.

The model's answers are noise (random weights); what is checked is the harness's path through a
real OpenAI-compatible VLM server: image and prompt accepted (a malformed image part or a prompt
over the context would come back as a 400 and a failed record), replies recorded and scored,
the run resumable and reported, for zero-shot and two-shot chain-of-thought prompts.
"""

from __future__ import annotations

import pytest

from retlink.eval.runs import RESULTS, read_records
from retlink.mate.harness import MateRunner, load_mate_config
from retlink.mate.questions import exact_match, extract_answer
from retlink.mate.report import write_report

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_mate_run_through_vllm(tiny_llava, mate_set_dir, tmp_path):
    cfg = load_mate_config({
        "name": "tiny",
        "data": {"path": str(mate_set_dir)},
        "limit": 6,
        "models": [{"name": "tiny-llava", "kind": "openai", "model": "tiny-llava", "base_url": tiny_llava.base_url,
                    "timeout_s": 120}],
        "prompts": [{"name": "0shot", "max_tokens": 8}, {"name": "2shot-cot", "shots": 2, "cot": True, "max_tokens": 16}],
        "output_dir": str(tmp_path),
        "concurrency": 4,
    })
    counts = MateRunner(cfg).run(progress=False)
    assert counts == {"planned": 12, "ran": 12, "failed": 0, "images": 0}
    records = read_records(cfg.run_dir() / RESULTS)
    assert len(records) == 12
    for r in records.values():
        assert r["status"] == "ok", r.get("error")
        # scored from the server's own reply: the prediction is what the reply says, graded against the truth
        assert (r["prediction"], r["json"]) == extract_answer(r["raw"]), r
        assert r["correct"] == exact_match(r["prediction"], r["answer"]), r
    assert len({r["task"] for r in records.values()}) >= 2  # the set's mixed order: several tasks in 6
    assert MateRunner(cfg).run(progress=False)["ran"] == 0
    summary = write_report(cfg.run_dir())
    assert set(summary["rows"]) == {"tiny-llava · 0shot", "tiny-llava · 2shot-cot"}
