"""plan_queries: decide what to search for (pure: no I/O).

One query pairs the mention with what the image shows (finds pages that tie the two
together); the others name the top candidates (find each candidate's own page, which the
enhancer condenses). The budget widens when the caption is unsure or the image looks
perturbed, because then the image evidence is weak and text must carry the decision.
"""

from __future__ import annotations

from typing import Any

from retlink.core.schema import CaptionRouteConfig, SearchConfig


def needs_wider_search(state: dict[str, Any], route: CaptionRouteConfig) -> bool:
    caption = state.get("caption")
    return bool(state.get("perturbed")) or caption is None or caption.confidence < route.low_confidence


def plan_queries(
    state: dict[str, Any], *, cfg: SearchConfig, route: CaptionRouteConfig, n_backends: int
) -> dict[str, Any]:
    if n_backends == 0 or not cfg.enabled:
        return {"queries": [], "_skipped": "no search backend configured"}
    widen = needs_wider_search(state, route)
    budget = cfg.widened_max_queries if widen else cfg.max_queries
    mention = state["mention"]
    caption = state.get("caption")
    queries: list[str] = []
    if caption is not None and caption.labels and not widen:
        queries.append(f"{mention} {' '.join(label for label, _ in caption.labels[:2])}")
    else:
        queries.append(state["context"])
    queries += [c.entity.name for c in state.get("candidates", [])]
    planned = list(dict.fromkeys(q for q in queries if q.strip()))[:budget]
    if not planned:
        return {"queries": [], "_skipped": "no query budget"}
    return {"queries": planned, "_detail": {"queries": planned, "widened": widen}}
