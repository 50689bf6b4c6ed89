"""The hand-set decision (no trained head) must not let the reasoner overturn a clear retrieval
winner without evidence: not into NIL, not into another candidate. Pure functions, no models."""

from __future__ import annotations

import pytest

from retlink.agent.nodes.decide import clear_winner, decide, route_after_rank
from retlink.core.schema import DecisionConfig, ReasonerConfig
from retlink.core.types import NIL, Candidate, Entity
from retlink.tools.llm.base import Choice


def cand(eid: str, score: float, enhanced: str | None = None) -> Candidate:
    return Candidate(entity=Entity(id=eid, name=eid.upper()), score=score, enhanced_description=enhanced)


def confident(option: str, ids: list[str]) -> Choice:
    probs = {k: (0.97 if k == option else 0.03 / len(ids)) for k in [*ids, NIL]}
    return Choice(option=option, confidence=0.97, probabilities=probs)


def pick(candidates: list[Candidate], choice: Choice, **decision) -> str:
    state = {"candidates": candidates, "choice": choice}
    out = decide(state, reasoner=ReasonerConfig(llm_weight=0.9), decision=DecisionConfig(**decision), head=None)
    return out["selected"]


CLEAR = [cand("a", 0.70), cand("b", 0.55), cand("c", 0.50)]
CLOSE = [cand("a", 0.60), cand("b", 0.59), cand("c", 0.50)]


@pytest.mark.parametrize("overturn_to", ["b", "c", NIL])
def test_a_confident_reasoner_without_evidence_cannot_overturn_a_clear_winner(overturn_to):
    # llm_weight 0.9: the unguarded blend would follow the reasoner every time
    assert pick(CLEAR, confident(overturn_to, ["a", "b", "c"])) == "a"


def test_the_guard_only_holds_clear_winners_and_yields_to_evidence():
    ids = ["a", "b", "c"]
    # a close call is the reasoner's to decide
    assert pick(CLOSE, confident("b", ids)) == "b"
    # search evidence assigned to the reasoner's pick (an enhanced description) lets it overturn
    with_evidence = [cand("a", 0.70), cand("b", 0.55, enhanced="B is the one the sentence describes."), cand("c", 0.5)]
    assert pick(with_evidence, confident("b", ids)) == "b"
    # but evidence never licenses NIL over a clear winner
    assert pick(with_evidence, confident(NIL, ids)) == "a"
    # the margin is configurable: 0.2 makes the 0.15 lead not clear
    assert pick(CLEAR, confident("b", ids), clear_margin=0.2) == "b"
    assert clear_winner(CLEAR, 0.05) == "a" and clear_winner(CLOSE, 0.05) is None


def test_routes_without_the_llm():
    state = {"candidates": CLEAR}
    assert route_after_rank({"candidates": []}, cfg=DecisionConfig()) == "finalize"
    assert route_after_rank(state, cfg=DecisionConfig()) == "plan_queries"
    assert route_after_rank(state, cfg=DecisionConfig(), reasoner_enabled=False) == "fallback"
    with_prior = {**state, "prior": {"a": 0.95, "b": 0.05, NIL: 0.0}}
    assert route_after_rank(with_prior, cfg=DecisionConfig(), reasoner_enabled=False) == "decide"
    assert route_after_rank(with_prior, cfg=DecisionConfig(skip_llm_above=0.9)) == "decide"
    assert route_after_rank(with_prior, cfg=DecisionConfig(skip_llm_above=0.99)) == "plan_queries"
