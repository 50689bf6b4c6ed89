"""The graph `langgraph.json` names, for LangGraph's own server and studio (`langgraph dev`).

Built when the server imports this module, which it does once, off its event loop: the models
load then, not inside a request (the dev server flags blocking calls on its loop, and a graph
factory would be called on the loop for every run). The agent config is the one named by
$RETLINK_CONFIG (a YAML path or a preset name), else the embedded default. The graph is
compiled without a checkpointer: the server brings its own (langgraph.json's `checkpointer`).
"""

from __future__ import annotations

import os

from retlink.agent.backends import build_components
from retlink.agent.graph import build_graph

graph = build_graph(build_components(os.environ.get("RETLINK_CONFIG") or None))
