"""Skipping the LLM (issue 20, item 2): the route and the trace follow one rule, and the trace
says why search, enhancer and reasoner did not run."""

from __future__ import annotations

import pytest

from retlink.agent.decision import DecisionHead
from retlink.agent.decision.features import FEATURES, NIL_FEATURES
from retlink.agent.nodes.decide import llm_skip_reason, rank, route_after_rank
from retlink.core.schema import DecisionConfig, KBConfig
from retlink.core.types import NIL, Candidate, Entity
from tests.core.head_groups import synthetic_groups


def cand(i: str, text: float, image: float) -> Candidate:
    return Candidate(entity=Entity(id=i, name=i.upper()), score=(text + image) / 2, text_score=text, image_score=image)


@pytest.fixture(scope="module")
def head() -> DecisionHead:
    fitted = DecisionHead.fit(synthetic_groups(200, 0, nil_every=5), list(FEATURES), list(NIL_FEATURES), l2=1e-3)
    fitted.reasoner_weight = 1.0  # a head whose dev links showed the reasoner helps
    return fitted


def test_reason_rule():
    prior = {"a": 0.93, "b": 0.05, NIL: 0.02}
    assert llm_skip_reason(prior, DecisionConfig(), True) is None
    assert llm_skip_reason(prior, DecisionConfig(skip_llm_above=0.95), True) is None
    why = llm_skip_reason(prior, DecisionConfig(skip_llm_above=0.9), True)
    assert why is not None and "p(a) = 0.9300" in why and "skip_llm_above 0.9" in why
    # a confident NIL skips too: NIL is the head's answer then
    assert "p(NIL)" in llm_skip_reason({"a": 0.01, NIL: 0.99}, DecisionConfig(skip_llm_above=0.9), True)
    assert llm_skip_reason(None, DecisionConfig(skip_llm_above=0.0), True) is None  # no head: never
    assert llm_skip_reason(None, DecisionConfig(), False) == "reasoner disabled"
    # a head that gives the reasoner weight 0 skips whatever its confidence; weight > 0 does not
    assert llm_skip_reason(prior, DecisionConfig(), True, 0.0) == "decision head gives the reasoner weight 0"
    assert llm_skip_reason(prior, DecisionConfig(), True, 0.5) is None
    assert llm_skip_reason(prior, DecisionConfig(), False, 0.0) == "reasoner disabled"


@pytest.mark.parametrize("pool", [
    [cand("a", 0.9, 0.8), cand("b", 0.2, 0.1), cand("c", 0.1, 0.2)],
    [cand("a", 0.5, 0.5), cand("b", 0.5, 0.49)],
])
def test_rank_records_the_skip_exactly_when_the_route_skips(head, pool):
    state = {"candidates": pool}
    out = rank(state, head=head, cfg=KBConfig(), decision=DecisionConfig(), reasoner_enabled=True)
    p = max(out["prior"].values())
    assert p < 1.0
    assert "skip_llm" not in out["_detail"]
    for threshold, skips in [(max(0.0, p - 1e-3), True), (min(1.0, p + 1e-3), False)]:
        cfg = DecisionConfig(skip_llm_above=threshold)
        out = rank(state, head=head, cfg=KBConfig(), decision=cfg, reasoner_enabled=True)
        route = route_after_rank({**state, **out}, cfg=cfg, reasoner_weight=head.reasoner_weight)
        assert (route == "decide") == skips == ("skip_llm" in out["_detail"]), (threshold, p, route)


def test_a_head_that_gives_the_reasoner_weight_0_skips_the_llm_on_every_link(head):
    import dataclasses

    silent = dataclasses.replace(head, reasoner_weight=0.0)
    for pool in ([cand("a", 0.9, 0.8), cand("b", 0.2, 0.1)], [cand("a", 0.5, 0.5), cand("b", 0.5, 0.49)]):
        state = {"candidates": pool}
        out = rank(state, head=silent, cfg=KBConfig(), decision=DecisionConfig(), reasoner_enabled=True)
        assert out["_detail"]["skip_llm"] == "decision head gives the reasoner weight 0"
        assert route_after_rank({**state, **out}, cfg=DecisionConfig(), reasoner_weight=0.0) == "decide"


@pytest.mark.slow
def test_link_trace_says_the_reasoner_is_disabled(demo_kb_path, demo_dir):
    from retlink import Linker

    result = Linker.from_config({"kb": {"path": str(demo_kb_path)}, "reasoner": {"enabled": False}}).link(
        demo_dir / "images" / "rocket.jpg", "Falcon", context="The [Falcon] climbed away from the launch pad."
    )
    nodes = [e.node for e in result.trace]
    assert "reason" not in nodes and "enhance" not in nodes
    assert next(e for e in result.trace if e.node == "rank").detail["skip_llm"] == "reasoner disabled"


def _demo_head(demo_kb_path, tmp_path, weight: float) -> str:
    """A head bound to the demo KB's fingerprint (fitted on synthetic links: what it ranks does not
    matter here, only whether the LLM is needed) with the given reasoner weight."""
    from retlink.agent.backends import open_kb
    from retlink.agent.decision import kb_fingerprint

    head = DecisionHead.fit(synthetic_groups(100, 1, nil_every=5), list(FEATURES), list(NIL_FEATURES), l2=1e-3)
    head.reasoner_weight = weight
    head.fingerprint = kb_fingerprint(open_kb({"kb": {"path": str(demo_kb_path)}}).manifest)
    return str(head.save(tmp_path / f"head-{weight}.json"))


@pytest.mark.slow
def test_a_head_that_gives_the_reasoner_weight_0_never_loads_the_llm(demo_kb_path, demo_dir, tmp_path):
    """The reasoner's model points at a folder that does not exist: loading it fails, so a
    Linker that builds and links proves the LLM was never loaded; with weight 0.5 it must load."""
    from retlink import Linker
    from retlink.core.errors import RetlinkError

    missing_llm = {"llm": {"model": str(tmp_path / "no-such-model")}}
    cfg = {"kb": {"path": str(demo_kb_path)}, "reasoner": missing_llm,
           "decision": {"head": _demo_head(demo_kb_path, tmp_path, 0.0)}}
    linker = Linker.from_config(cfg)
    assert linker.components.reasoner_llm is None and linker.components.enhancer_llm is None
    result = linker.link(demo_dir / "images" / "rocket.jpg", "Falcon", context="The [Falcon] climbed away from the launch pad.")
    nodes = [e.node for e in result.trace]
    assert {"plan_queries", "search", "enhance", "reason"}.isdisjoint(nodes), nodes
    assert next(e for e in result.trace if e.node == "rank").detail["skip_llm"] == "decision head gives the reasoner weight 0"
    assert "decide" in nodes  # the head decided (it may pick NIL: it was fitted on synthetic links)

    with pytest.raises((RetlinkError, OSError)):
        Linker.from_config({**cfg, "decision": {"head": _demo_head(demo_kb_path, tmp_path, 0.5)}})
