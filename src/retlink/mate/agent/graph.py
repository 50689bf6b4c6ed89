"""The MATE binding agent as a LangGraph graph (nodes in `retlink.mate.agent.nodes`).

    parse -> perceive -> link -> answer

A straight line on purpose: every question needs all four steps. `BindingAgent.answer` runs it
on one (PNG, JSON text, question) and returns the answer with the trace of each node's time and
details, which the MATE harness records like a model's reply.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from retlink.agent.nodes.tracing import traced
from retlink.core.types import TraceEvent
from retlink.mate.agent import nodes
from retlink.mate.scene import Camera


class BindingState(TypedDict, total=False):
    image_path: str
    scene_json: str
    #: the scene text's format (`retlink.mate.scene_text.FORMATS`)
    text_format: str
    question: str
    target: str
    pointer: tuple[str, str]
    regions: list[Any]
    objects: list[dict[str, Any]]
    links: dict[int, int]
    shapes: dict[int, str]
    answer: Any
    trace: Annotated[list[TraceEvent], operator.add]


def build_graph(camera: Camera):
    g = StateGraph(BindingState)
    g.add_node("parse", traced("parse", nodes.parse))
    g.add_node("perceive", traced("perceive", nodes.perceive))
    g.add_node("link", traced("link", nodes.link, camera=camera))
    g.add_node("answer", traced("answer", nodes.answer))
    g.add_edge(START, "parse")
    g.add_edge("parse", "perceive")
    g.add_edge("perceive", "link")
    g.add_edge("link", "answer")
    g.add_edge("answer", END)
    return g.compile()


class BindingAgent:
    """Answers MATE questions from the PNG and the JSON text, with the benchmark's camera."""

    def __init__(self, camera: Camera | dict[str, Any]) -> None:
        if isinstance(camera, dict):
            camera = Camera.from_dict(camera)
        self.camera = camera
        self.graph = build_graph(camera)

    def answer(self, image_path: str | Path, scene_text: str, question: str, text_format: str = "json") -> dict[str, Any]:
        """The answer to `question` from the PNG and the scene text (written in `text_format`)."""
        state = self.graph.invoke(
            {"image_path": str(image_path), "scene_json": scene_text, "text_format": text_format, "question": question, "trace": []}
        )
        trace = [{"node": e.node, "seconds": e.seconds, "skipped": e.skipped, **(e.detail or {})} for e in state["trace"]]
        return {"answer": state.get("answer"), "trace": trace}
