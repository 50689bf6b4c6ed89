"""The linking graph: a LangGraph StateGraph; its routes are the agent's decisions:

    validate -> detect --(flagged, or purification configured)--> purify -> caption
    detect --(clean and no purification configured)--> caption
    caption -> retrieve -> rank --(no candidates)--> finalize
    caption -> summarize -> retrieve    (instead, with `summary.enabled`: modality summarisation)
    rank --(head confident beyond decision.skip_llm_above, head's reasoner weight 0, or no reasoner)--> decide
    rank --(no reasoner and no head)--> fallback
    rank -> plan_queries --(one Send per query)--> search ‖ search ‖ ... --> enhance
    plan_queries --(no backend or no budget)--> enhance
    enhance -> reason --(valid answer)--> decide --> finalize
    reason --(invalid, retries left)--> reason
    reason --(invalid, no retries left)--> fallback --> finalize

detect flags a perturbed image: the flagged image is purified, its image evidence is
down-weighted in retrieval and the search is widened. Detection is off unless configured.

Nodes are plain functions in `retlink.agent.nodes`; this module only wires them to their
dependencies (`Components`) and declares the routes, so every decision is visible here.
"""

from __future__ import annotations

import functools
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from retlink.agent.nodes.captioner import caption
from retlink.agent.nodes.decide import decide, fallback, rank, route_after_rank
from retlink.agent.nodes.defender import detect, purify, route_after_detect
from retlink.agent.nodes.enhancer import enhance
from retlink.agent.nodes.finalizer import finalize
from retlink.agent.nodes.planner import plan_queries
from retlink.agent.nodes.reasoner import reason, route_after_reason
from retlink.agent.nodes.retriever import retrieve
from retlink.agent.nodes.searcher import search
from retlink.agent.nodes.summarizer import summarize
from retlink.agent.nodes.tracing import traced
from retlink.agent.nodes.validator import validate
from retlink.agent.state import LinkState
from retlink.core.schema import SearchConfig
from retlink.tools.scrape import new_budget_spec


def route_search(state: dict[str, Any], *, cfg: SearchConfig) -> list[Send] | str:
    """One parallel search branch per planned query, all sharing this link's budget. The branches
    carry the budget's spec (plain data a checkpointer can store), not the live budget."""
    queries = state.get("queries") or []
    if not queries:
        return "enhance"
    spec = new_budget_spec(cfg)
    return [Send("search", {"query": q, "budget": spec}) for q in queries]


def build_graph(components: Any, checkpointer: Any = None):
    """Compile the linking graph over the given backends (see `retlink.agent.backends.Components`),
    saving its state through `checkpointer` when one is given (`retlink.tools.checkpoint`)."""
    cfg = components.config
    g = StateGraph(LinkState)

    def add(name: str, fn: Any, **deps: Any) -> None:
        g.add_node(name, traced(name, fn, **deps))

    add("validate", validate, limits=cfg.limits)
    add("detect", detect, detector=components.detector, cfg=cfg.defence.detector)
    add("purify", purify, cfg=cfg.defence)
    add("caption", caption, captioner=components.captioner)
    add(
        "retrieve",
        retrieve,
        kb=components.kb,
        text_embedder=components.text_embedder,
        image_embedder=components.image_embedder,
        cfg=cfg.kb,
    )
    if cfg.summary.enabled:
        add("summarize", summarize, cfg=cfg.summary, llm=getattr(components, "summary_llm", None))
    add("rank", rank, head=components.head, cfg=cfg.kb, decision=cfg.decision, reasoner_enabled=cfg.reasoner.enabled)
    add("plan_queries", plan_queries, cfg=cfg.search, route=cfg.caption_route, n_backends=len(components.search_backends))
    add("search", search, backends=components.search_backends, cfg=cfg.search, scraper=components.scraper)
    add(
        "enhance",
        enhance,
        llm=components.enhancer_llm,
        embedder=components.text_embedder,
        cfg=cfg.enhancer,
        cache=components.description_cache,
        store=components.description_store,
    )
    add("reason", reason, llm=components.reasoner_llm, cfg=cfg.reasoner)
    add("decide", decide, reasoner=cfg.reasoner, decision=cfg.decision, head=components.head)
    add("fallback", fallback, head=components.head)
    add("finalize", finalize)

    g.add_edge(START, "validate")
    g.add_edge("validate", "detect")
    g.add_conditional_edges("detect", functools.partial(route_after_detect, cfg=cfg.defence), ["purify", "caption"])
    g.add_edge("purify", "caption")
    if cfg.summary.enabled:
        g.add_edge("caption", "summarize")
        g.add_edge("summarize", "retrieve")
    else:
        g.add_edge("caption", "retrieve")
    g.add_edge("retrieve", "rank")
    g.add_conditional_edges(
        "rank",
        functools.partial(
            route_after_rank,
            cfg=cfg.decision,
            reasoner_enabled=cfg.reasoner.enabled,
            reasoner_weight=components.head.reasoner_weight if components.head is not None else None,
        ),
        ["plan_queries", "decide", "fallback", "finalize"],
    )
    g.add_conditional_edges("plan_queries", functools.partial(route_search, cfg=cfg.search), ["search", "enhance"])
    g.add_edge("search", "enhance")
    g.add_edge("enhance", "reason")
    g.add_conditional_edges(
        "reason", functools.partial(route_after_reason, cfg=cfg.reasoner), ["decide", "reason", "fallback"]
    )
    g.add_edge("decide", "finalize")
    g.add_edge("fallback", "finalize")
    g.add_edge("finalize", END)
    return g.compile(checkpointer=checkpointer)
