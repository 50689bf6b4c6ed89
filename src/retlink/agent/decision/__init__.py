"""The trained decision head: fitting, saving and loading (`head.py`)."""

from retlink.agent.decision.head import DecisionHead, Group, embedder_fingerprint, head_file, kb_fingerprint

__all__ = ["DecisionHead", "Group", "embedder_fingerprint", "head_file", "kb_fingerprint"]
