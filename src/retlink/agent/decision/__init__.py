"""The trained decision head: fitting, saving and loading (`head.py`)."""

from retlink.agent.decision.head import DecisionHead, Group, kb_fingerprint

__all__ = ["DecisionHead", "Group", "kb_fingerprint"]
