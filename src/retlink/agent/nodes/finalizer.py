"""finalize: assemble the LinkResult from the state (pure)."""

from __future__ import annotations

from typing import Any

from retlink.core.types import NIL, LinkResult


def _rationale(state: dict[str, Any], entity_id: str, score: float) -> str:
    decided_by = state.get("decided_by", "nil")
    if decided_by == "nil" or entity_id == NIL:
        if not state.get("candidates"):
            return "No knowledge-base entity matched the mention, the sentence or the image, so the answer is NIL."
        return "The reasoner judged that none of the candidates fits the mention, so the answer is NIL."
    cand = next(c for c in state["candidates"] if c.entity.id == entity_id)
    parts = [f"{cand.entity.name} ({entity_id})"]
    if cand.alias_match:
        parts.append(f"its name matches the mention '{state['mention']}'")
    parts.append(f"text similarity {cand.text_score:.2f}")
    if cand.image_score is not None:
        parts.append(f"image similarity {cand.image_score:.2f}")
    how = {
        "reasoner": "the reasoner's answer, weighed with the retrieval signals",
        "head": "the trained decision head over the retrieval signals",
    }.get(decided_by, "the retrieval ranking (the reasoner gave no valid answer)")
    urls = [e.url for e in state.get("evidence", [])][:3]
    ev = f" Evidence: {', '.join(urls)}." if urls else ""
    return f"Linked to {parts[0]}: {'; '.join(parts[1:])}; chosen by {how} with score {score:.2f}.{ev}"


def _features(state: dict[str, Any]):
    feats, choice = state.get("features"), state.get("choice")
    if feats is None or choice is None:
        return feats
    return feats.model_copy(update={"reasoner": {k: round(v, 5) for k, v in choice.probabilities.items()}})


def finalize(state: dict[str, Any]) -> dict[str, Any]:
    candidates = state.get("candidates", [])
    selected = state.get("selected", NIL) if candidates else NIL
    scores = state.get("final_scores", {})
    entity = next((c.entity for c in candidates if c.entity.id == selected), None)
    decided_by = state.get("decided_by", "nil") if entity is not None else "nil"
    score = float(scores.get(selected, 0.0))
    choice = state.get("choice")
    state_for_rationale = {**state, "decided_by": decided_by}
    result = LinkResult(
        entity=entity,
        score=round(score, 4),
        decided_by=decided_by,
        mention=state.get("mention", ""),
        candidates=candidates,
        caption=state.get("caption"),
        evidence=list({e.url: e for e in state.get("evidence", [])}.values()),
        rationale=_rationale(state_for_rationale, selected if entity else NIL, score),
        reasoning=state.get("reasoning") or (choice.reasoning if choice is not None else ""),
        perturbed=bool(state.get("perturbed", False)),
        perturbation_note=state.get("perturbation_note", ""),
        trace=[],  # filled by the Linker from the full trace, which includes this node
        features=_features(state),
    )
    return {"result": result, "_detail": {"entity": result.entity_id, "decided_by": decided_by}}
