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


class TokenUsage(BaseModel):
    """The tokens one model request cost: what the prompt diet and the latency work measure.

    `prompt_tokens` are prefilled, `generated_tokens` decoded one by one; `scored_tokens` are
    tokens run through the model only to score the options (in-process `choose`), and
    `cached_tokens` the part of the prompt whose KV state was reused instead of prefilled.
    """

    prompt_tokens: int = Field(ge=0)
    generated_tokens: int = Field(0, ge=0)
    scored_tokens: int = Field(0, ge=0)
    cached_tokens: int = Field(0, ge=0)


class Generation(BaseModel):
    text: str
    reasoning: str = ""
    #: None when the backend did not say (a server without `usage` in its reply)
    usage: TokenUsage | None = None


class Choice(BaseModel):
    """A constrained answer. `option` is None when the backend could not produce a valid one."""

    option: str | None
    confidence: float = 0.0
    probabilities: dict[str, float] = Field(default_factory=dict)
    reasoning: str = ""
    raw: str = ""
    #: one entry per model request the choice took (a served model answers in two)
    usage: list[TokenUsage] = Field(default_factory=list)


@runtime_checkable
class LLM(Protocol):
    name: str

    def generate(self, messages: list[Message], *, max_tokens: int) -> Generation: ...

    def choose(self, messages: list[Message], options: list[str], *, max_reasoning_tokens: int) -> Choice: ...


def llm_calls(answers: list[Generation] | Choice) -> list[dict[str, int]]:
    """The per-request token counts of some answers, as the trace records them (`llm_calls`)."""
    usages = answers.usage if isinstance(answers, Choice) else [g.usage for g in answers]
    return [u.model_dump() for u in usages if u is not None]


def split_think(text: str) -> tuple[str, str]:
    """Split inline `<think>...</think>` reasoning from the answer: (reasoning, answer)."""
    start, end = text.find("<think>"), text.find("</think>")
    if end == -1:
        return "", text.strip()
    reasoning = text[start + len("<think>") if start != -1 else 0 : end]
    return reasoning.strip(), text[end + len("</think>") :].strip()
