"""The data that crosses module boundaries: KB entities, candidates, evidence and the result.

Pydantic models so that a LinkResult round-trips through JSON (CLI `--json`, the chat endpoint,
the eval runner's JSONL) without hand-written serialisers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NIL = "NIL"


class Entity(BaseModel):
    """One knowledge-base entry."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    description: str = ""
    image_paths: list[str] = Field(default_factory=list)

    @field_validator("id", "name")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        # "   " passes min_length but names nothing: refused like "" (kept as given otherwise)
        if not v.strip():
            raise ValueError("must not be blank (whitespace only)")
        return v

    def text(self) -> str:
        """The text that represents the entity for embedding and prompts."""
        alias = f" (also: {', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.name}{alias}. {self.description}".strip()


class Candidate(BaseModel):
    """An entity proposed for the mention, with the scores that proposed it."""

    entity: Entity
    score: float = Field(description="fused retrieval score in [0, 1]; higher is better")
    text_score: float = 0.0
    image_score: float | None = None
    alias_match: bool = False
    #: similarity of the caption's labels to the entity's KB text (None: no caption)
    caption_score: float | None = None
    #: the decision head's probability for this candidate over the whole pool (None: no head)
    prior: float | None = None
    enhanced_description: str | None = None


class Caption(BaseModel):
    """What the vision model says is in the image."""

    text: str
    labels: list[tuple[str, float]] = Field(default_factory=list)
    confidence: float = 0.0
    backend: str = ""
    #: the network or served model behind `backend` (e.g. "efficientnet_lite1"); "" when unknown
    model: str = ""


class SearchHit(BaseModel):
    """One search result. `content` is set by backends that return full text (local corpus)."""

    title: str
    url: str
    snippet: str = ""
    backend: str = ""
    rank: int = 0
    content: str | None = None


class Evidence(BaseModel):
    """A passage of untrusted text (web or corpus) used to describe candidates."""

    url: str
    title: str = ""
    text: str
    query: str = ""
    backend: str = ""
    date: str | None = None


class TraceEvent(BaseModel):
    """What one graph node did: its wall time and, if it skipped work, why."""

    node: str
    seconds: float
    skipped: str | None = None
    detail: dict = Field(default_factory=dict)


class PoolFeatures(BaseModel):
    """Per-candidate decision features of one link (`retlink.agent.decision.features`)."""

    names: list[str]
    ids: list[str]
    rows: list[list[float]]
    nil: list[float] = Field(default_factory=list)
    #: the NIL row's feature names (None: the agent's `NIL_FEATURES`)
    nil_names: list[str] | None = None
    #: a short hash of how the features are computed beyond their names (sizes, thresholds, a
    #: version bumped when a computation changes); a resumed run and a decision head refuse links
    #: of the same names computed another way. None: not recorded (the agent's, older runs)
    definition: str | None = None
    #: the reasoner's probabilities over the options it saw (the kept top_k and NIL), when it
    #: answered: what `retlink train` fits the reasoner's weight on
    reasoner: dict[str, float] | None = None


class LinkResult(BaseModel):
    """The answer of one link: the entity (None for NIL), why, and how the graph got there."""

    entity: Entity | None
    score: float
    decided_by: Literal["reasoner", "head", "fallback", "nil"]
    mention: str
    candidates: list[Candidate] = Field(default_factory=list)
    caption: Caption | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    rationale: str = ""
    reasoning: str = ""
    perturbed: bool = False
    perturbation_note: str = ""
    trace: list[TraceEvent] = Field(default_factory=list)
    #: the decision layer's inputs: feature names and one row per pooled candidate (what
    #: `retlink train` fits the head on); None when the graph did not rank a pool
    features: PoolFeatures | None = None
    #: the LangGraph thread this link's checkpoints are saved under (`checkpointer:` in the
    #: config; `Linker.snapshot` / `Linker.resume` take it); None without a checkpointer
    thread_id: str | None = None

    @property
    def entity_id(self) -> str:
        """The linked entity id, or "NIL"."""
        return self.entity.id if self.entity else NIL
