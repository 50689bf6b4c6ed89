"""rank, decide, fallback: the decision layer between retrieval and the answer.

rank scores the whole retrieved pool with the cheap signals (`agent/decision/features.py`): with a
trained head (`retlink train`) by the head's calibrated distribution over the pool and NIL, else
by the fused retrieval score. It keeps the top_k for the reasoner, so candidates the fused score
ranked low but the head trusts still reach it (candidate recall).

decide turns the evidence into the answer:
- with a head: the head's distribution over the top_k and NIL, plus the reasoner's log
  probability times the weight the dev data gave it (often small: a 135M model earns little);
- without one: the hand-set blend `reasoner.blend`, guarded so that a clear retrieval winner
  (fused margin at least `decision.clear_margin`) is not replaced by NIL, nor by another
  candidate that no search evidence supports.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retlink.agent.decision import DecisionHead
from retlink.agent.decision.features import pool_features
from retlink.agent.nodes.reasoner import blend, retrieval_distribution
from retlink.core.schema import DecisionConfig, KBConfig, ReasonerConfig
from retlink.core.types import NIL, Candidate


def rank(
    state: dict[str, Any],
    *,
    head: DecisionHead | None,
    cfg: KBConfig,
    decision: DecisionConfig | None = None,
    reasoner_enabled: bool = True,
) -> dict[str, Any]:
    weight = head.reasoner_weight if head is not None else None
    pool: list[Candidate] = state.get("candidates", [])
    feats = pool_features(
        pool, detector_score=float(state.get("detector_score", 0.0)), purified=bool(state.get("purified", False))
    )
    if head is None or not pool:
        kept = pool[: cfg.top_k]
        why = llm_skip_reason(None, decision, reasoner_enabled, weight) if decision is not None and kept else None
        detail = {"by": "fused score", "pool": len(pool), **({"skip_llm": why} if why else {})}
        return {"candidates": kept, "features": feats, "_detail": detail}
    prior = head.distribution(feats.ids, np.array(feats.rows), np.array(feats.nil))
    order = sorted(range(len(pool)), key=lambda i: -prior[pool[i].entity.id])
    kept = [pool[i].model_copy(update={"prior": round(prior[pool[i].entity.id], 4)}) for i in order[: cfg.top_k]]
    top = kept[0].entity.id
    detail = {"by": "head", "pool": len(pool), "top": top, "p": round(prior[top], 4), "p_nil": round(prior[NIL], 4)}
    why = llm_skip_reason(prior, decision, reasoner_enabled, weight) if decision is not None else None
    return {"candidates": kept, "features": feats, "prior": prior, "_detail": {**detail, **({"skip_llm": why} if why else {})}}


def llm_unused(reasoner_enabled: bool, reasoner_weight: float | None) -> str | None:
    """Why no link of this configuration can use the LLM, or None.

    A head that gave the reasoner weight 0 (its dev links showed the reasoner buys nothing)
    decides from its own distribution whatever the reasoner answers, so calling the reasoner,
    or the enhancer that only feeds it, would cost a prefill per link and change no answer.
    `build_components` does not even load the model then."""
    if not reasoner_enabled:
        return "reasoner disabled"
    if reasoner_weight is not None and reasoner_weight == 0:
        return "decision head gives the reasoner weight 0"
    return None


def llm_skip_reason(
    prior: dict[str, float] | None,
    cfg: DecisionConfig,
    reasoner_enabled: bool,
    reasoner_weight: float | None = None,
) -> str | None:
    """Why this link decides without the LLM (search, enhancer and reasoner skipped), or None.

    The one rule `route_after_rank` follows, so the trace (rank's `skip_llm`) states exactly the
    reason the route took. `reasoner_weight` is the head's (None: no head)."""
    unused = llm_unused(reasoner_enabled, reasoner_weight)
    if unused is not None:
        return unused
    if prior and cfg.skip_llm_above is not None:
        p = max(prior.values())
        if p >= cfg.skip_llm_above:
            best = max(prior, key=prior.get)
            return f"decision head p({best}) = {p:.4f} >= skip_llm_above {cfg.skip_llm_above}"
    return None


def route_after_rank(
    state: dict[str, Any],
    *,
    cfg: DecisionConfig,
    reasoner_enabled: bool = True,
    reasoner_weight: float | None = None,
) -> str:
    """No candidates: NIL. No reasoner, a head that gives it weight 0, or a head confident beyond
    `skip_llm_above`: decide without the LLM (the head decides; without a head, the retrieval
    ranking)."""
    if not state.get("candidates"):
        return "finalize"
    prior = state.get("prior")
    if llm_skip_reason(prior, cfg, reasoner_enabled, reasoner_weight) is None:
        return "plan_queries"
    return "decide" if prior else "fallback"


def _restricted(state: dict[str, Any], head: DecisionHead, reasoner: dict[str, float] | None) -> dict[str, float]:
    feats = state["features"]
    return head.distribution(
        feats.ids,
        np.array(feats.rows),
        np.array(feats.nil),
        reasoner=reasoner,
        restrict=[c.entity.id for c in state["candidates"]],
    )


def clear_winner(candidates: list[Candidate], margin: float) -> str | None:
    """The top candidate when its fused score leads the next one by at least `margin`."""
    if not candidates:
        return None
    ranked = sorted(candidates, key=lambda c: -c.score)
    if len(ranked) == 1 or ranked[0].score - ranked[1].score >= margin:
        return ranked[0].entity.id
    return None


def guarded_blend(
    state: dict[str, Any], reasoner: ReasonerConfig, decision: DecisionConfig
) -> tuple[dict[str, float], str, str | None]:
    """The hand-set blend and its pick, the pick reverted to a clear retrieval winner when the
    reasoner moved it to NIL or to a candidate without evidence. Returns (scores, pick, guard note)."""
    candidates = state["candidates"][: reasoner.max_candidates]
    final = blend(state["choice"], candidates, reasoner.llm_weight)
    pick = max(final, key=final.get)
    winner = clear_winner(candidates, decision.clear_margin)
    if winner is None or pick == winner:
        return final, pick, None
    supported = pick != NIL and any(c.entity.id == pick and c.enhanced_description for c in candidates)
    if supported:
        return final, pick, None
    return final, winner, f"kept the clear retrieval winner {winner} over {pick} (no evidence for it)"


def decide(
    state: dict[str, Any], *, reasoner: ReasonerConfig, decision: DecisionConfig, head: DecisionHead | None
) -> dict[str, Any]:
    """Pick the final entity (or NIL) from the head and/or the reasoner's answer."""
    choice = state.get("choice")
    if head is not None and state.get("features") is not None:
        final = _restricted(state, head, choice.probabilities if choice is not None else None)
        best = max(final, key=final.get)
        by = "head" if choice is None else "reasoner"
        detail = {"selected": best, "score": round(final[best], 4), "reasoner_weight": head.reasoner_weight,
                  "final": rounded(final)}
        return {"decided_by": by, "final_scores": final, "selected": best, "_detail": detail}
    final, best, note = guarded_blend(state, reasoner, decision)
    detail = {"selected": best, "score": round(final[best], 4), "final": rounded(final),
              **({"guard": note} if note else {})}
    return {"decided_by": "reasoner", "final_scores": final, "selected": best, "_detail": detail}


def fallback(state: dict[str, Any], *, head: DecisionHead | None = None) -> dict[str, Any]:
    """No valid reasoner answer: the head's choice, or the retrieval ranking's top candidate."""
    if head is not None and state.get("features") is not None:
        dist = _restricted(state, head, None)
        best = max(dist, key=dist.get)
        return {"decided_by": "head", "final_scores": dist, "selected": best,
                "_detail": {"selected": best, "final": rounded(dist)}}
    top = state["candidates"][0]
    dist = retrieval_distribution(state["candidates"])
    return {"decided_by": "fallback", "final_scores": dist, "selected": top.entity.id,
            "_detail": {"selected": top.entity.id, "final": rounded(dist)}}


def rounded(scores: dict[str, float]) -> dict[str, float]:
    """Final probabilities per candidate id (NIL included), for the trace: the web page's
    candidate table shows them."""
    return {k: round(float(v), 4) for k, v in scores.items()}
