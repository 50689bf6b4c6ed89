"""The typed state that flows through the linking graph.

Inputs are set once; every node returns only the keys it changes (LangGraph merges them).
`evidence`, `search_failures` and `trace` are append-only (reducers), because the search
node runs in parallel branches whose results must all be kept.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import numpy as np

from retlink.core.types import Candidate, Caption, Evidence, LinkResult, PoolFeatures, TraceEvent
from retlink.tools.llm.base import Choice
from retlink.tools.scrape.budget import BudgetSpec


class LinkState(TypedDict, total=False):
    # inputs
    image: Any
    mention: str
    context: str
    # set by nodes
    #: the validated image as uint8 HxWx3 pixels (a checkpointer can store them, not a PIL
    #: image); None: a text-only link (no image given)
    pixels: np.ndarray | None
    image_vector: Any
    caption: Caption
    #: modality summarisation (`summary.enabled`): the image as text for the query and the prompt
    summary: str
    perturbed: bool
    detector_score: float
    purified: bool
    perturbation_note: str
    candidates: list[Candidate]
    features: PoolFeatures
    prior: dict[str, float]
    queries: list[str]
    evidence: Annotated[list[Evidence], operator.add]
    search_failures: Annotated[list[str], operator.add]
    choice: Choice | None
    attempts: int
    #: the reasoner's chain of thought, every attempt's in order (a repair attempt has none of
    #: its own, so a broken first answer's reasoning is still the result's)
    reasoning: str
    decided_by: str
    final_scores: dict[str, float]
    selected: str
    result: LinkResult
    trace: Annotated[list[TraceEvent], operator.add]


class SearchTask(TypedDict):
    """The state a parallel search branch receives (sent with LangGraph's Send)."""

    query: str
    budget: BudgetSpec
