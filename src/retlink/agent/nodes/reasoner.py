"""reason: chain of thought, then an answer constrained to the candidate ids or NIL.

The backend constrains the answer (likelihood scoring in-process, a JSON-schema enum when
served). The decision then blends the reasoner's probabilities with the retrieval ranking:

    final(c) = w * p_reasoner(c) + (1 - w) * softmax(retrieval scores / T)(c)

because a small model's choice deserves trust only as far as the retrieval evidence agrees.
An answer below `min_confidence` counts as invalid: the graph retries once with a short
repair prompt, then falls back to the retrieval ranking. Each attempt's chain of thought is in
its trace event, and all of them, in order, in the state's `reasoning` (the result's).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from retlink.agent.prompts import reasoner_messages
from retlink.core.errors import BackendError
from retlink.core.schema import ReasonerConfig
from retlink.core.types import NIL, Candidate
from retlink.tools.llm.base import LLM, Choice, llm_calls

log = logging.getLogger(__name__)

RETRIEVAL_TEMPERATURE = 0.1


def retrieval_distribution(candidates: list[Candidate]) -> dict[str, float]:
    """Softmax of the fused retrieval scores (temperature 0.1: a 0.2 margin is ~7x more likely)."""
    if not candidates:
        return {}
    scores = np.array([c.score for c in candidates], dtype=np.float64) / RETRIEVAL_TEMPERATURE
    p = np.exp(scores - scores.max())
    p /= p.sum()
    return {c.entity.id: float(x) for c, x in zip(candidates, p, strict=True)}


def blend(choice: Choice, candidates: list[Candidate], llm_weight: float) -> dict[str, float]:
    """The final distribution over candidate ids and NIL."""
    retrieval = retrieval_distribution(candidates)
    keys = [*retrieval, NIL]
    return {k: llm_weight * choice.probabilities.get(k, 0.0) + (1 - llm_weight) * retrieval.get(k, 0.0) for k in keys}


def reason(state: dict[str, Any], *, llm: LLM, cfg: ReasonerConfig) -> dict[str, Any]:
    attempts = state.get("attempts", 0) + 1
    candidates = state["candidates"][: cfg.max_candidates]
    repair = attempts > 1
    messages = reasoner_messages(
        state["mention"], state["context"], state.get("caption"), candidates, state.get("evidence", []), repair=repair,
        image_first=cfg.modality_order == "image_first", prompt=cfg.prompt, summary=state.get("summary"),
    )
    options = [c.entity.id for c in candidates] + [NIL]
    try:
        choice = llm.choose(messages, options, max_reasoning_tokens=0 if repair else cfg.max_reasoning_tokens)
    except BackendError as e:
        log.warning("reasoner failed (attempt %d): %s", attempts, e)
        return {"attempts": attempts, "choice": None, "_skipped": f"reasoner failed: {e}"}
    valid = choice.option in options and choice.confidence >= cfg.min_confidence
    detail = {"attempt": attempts, "option": choice.option, "confidence": round(choice.confidence, 4), "valid": valid,
              "reasoning": choice.reasoning, "llm_calls": llm_calls(choice)}
    # the chain of thought of every attempt, kept: the repair prompt asks for the answer alone,
    # so after a broken first answer the only reasoning the link had is the first attempt's
    reasoning = "\n\n".join(r for r in (state.get("reasoning", ""), choice.reasoning) if r)
    return {"attempts": attempts, "choice": choice if valid else None, "reasoning": reasoning, "_detail": detail,
            **({} if valid else {"_skipped": "answer invalid or below min_confidence"})}


def route_after_reason(state: dict[str, Any], *, cfg: ReasonerConfig) -> str:
    if state.get("choice") is not None:
        return "decide"
    if state.get("attempts", 0) <= cfg.retries:
        return "reason"
    return "fallback"
