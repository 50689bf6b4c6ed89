"""The linking agent: state, graph, prompts, nodes and the decision (features, head)."""
