"""The language-model role shared by the enhancer and the reasoner.

Two calls cover everything the graph needs:
- `generate`: free text (the enhancer's condensed descriptions);
- `choose`: chain of thought, then an answer constrained to a closed set of options (the
  candidate ids and NIL). Constraint is the backend's job: likelihood scoring of the options
  in-process, a JSON-schema enum through vLLM's structured outputs when served.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

Message = dict[str, str]


class Generation(BaseModel):
    text: str
    reasoning: str = ""


class Choice(BaseModel):
    """A constrained answer. `option` is None when the backend could not produce a valid one."""

    option: str | None
    confidence: float = 0.0
    probabilities: dict[str, float] = Field(default_factory=dict)
    reasoning: str = ""
    raw: str = ""


@runtime_checkable
class LLM(Protocol):
    name: str

    def generate(self, messages: list[Message], *, max_tokens: int) -> Generation: ...

    def choose(self, messages: list[Message], options: list[str], *, max_reasoning_tokens: int) -> Choice: ...


def split_think(text: str) -> tuple[str, str]:
    """Split inline `<think>...</think>` reasoning from the answer: (reasoning, answer)."""
    start, end = text.find("<think>"), text.find("</think>")
    if end == -1:
        return "", text.strip()
    reasoning = text[start + len("<think>") if start != -1 else 0 : end]
    return reasoning.strip(), text[end + len("</think>") :].strip()
