"""Choosing the skip-the-LLM threshold on dev links (issue 20, item 2): the rule, its cost and
the records it reads."""

from __future__ import annotations

import math

import pytest

from retlink.core.errors import ConfigError
from retlink.eval.experiments.skip_llm import Pair, choose_threshold, main, outcome, pairs_from_run
from retlink.eval.runs import RESULTS, RecordLog


def test_the_lowest_threshold_that_loses_nothing():
    pairs = [
        Pair("a", 0.99, True, True),
        Pair("b", 0.95, True, True),
        Pair("c", 0.80, True, False),  # the LLM fixed what the head got wrong: skipping c costs a link
        Pair("d", 0.60, False, True),  # the head was right where the LLM was not
        Pair("e", 0.50, False, False),
    ]
    t = choose_threshold(pairs)
    assert t == 0.95  # 0.80 would skip c and lose it; 0.95 skips a and b for free
    out = outcome(pairs, t)
    assert out["skip_share"] == pytest.approx(0.4) and out["diff"] == 0.0 and out["diff_ci"] == (0.0, 0.0)
    # below 0.8 the accuracy is the same (d's gain pays for c's loss), but c is lost: strict
    assert outcome(pairs, 0.0)["accuracy"] == outcome(pairs, math.inf)["accuracy"]
    assert choose_threshold(pairs, max_loss=1) == 0.0
    assert outcome(pairs, 0.6)["accuracy"] == outcome(pairs, math.inf)["accuracy"]
    assert choose_threshold([Pair("x", 0.9, True, False)]) == math.inf
    assert outcome(pairs, math.inf)["skip_share"] == 0.0


def test_reads_the_pairs_from_a_run(tmp_path):
    def rec(pipe, sid, correct, **extra):
        return {"key": f"{sid}|{pipe}|it2t|clean", "pipeline": pipe, "sample_id": sid, "setting": "it2t",
                "attack": "clean", "status": "ok", "correct": correct, **extra}

    with RecordLog(tmp_path / RESULTS) as log:
        log.append(rec("agent-head-llm", "s1", True, head_p=0.97))
        log.append(rec("agent-head", "s1", True, head_p=0.97))
        log.append(rec("agent-head-llm", "s2", True, head_p=0.7))
        log.append(rec("agent-head", "s2", False, head_p=0.7))
        log.append(rec("agent-head-llm", "s3", False, head_p=0.5))  # no head-only link: left out
    pairs = pairs_from_run(tmp_path, llm="agent-head-llm", head="agent-head")
    assert [p.sample_id for p in pairs] == ["s1", "s2"]
    assert main([str(tmp_path)])["threshold"] == 0.97
    with pytest.raises(ConfigError, match="no sample linked by both"):
        pairs_from_run(tmp_path, llm="agent-head-llm", head="baseline")
