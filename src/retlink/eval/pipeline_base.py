"""What every pipeline kind shares, below the registry (`retlink.eval.pipelines`): the
`Pipeline` protocol, the answer of a similarity-only pipeline (`top_ranked`), and the agent
config (and its embedders) that the agent-config kinds read. The kinds' own modules (the
baseline, the image levels) import this, and the registry imports them, so nothing imports back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from retlink.core.types import Candidate, LinkResult, TraceEvent

#: pipeline kinds that read an agent config (`config` + `overrides`); `retlink.eval.pipelines`
#: builds them
AGENT_CONFIG_KINDS = ("agent", "tagger", "retrieval")


class Pipeline(Protocol):
    """What the runner calls; must be safe to call from several threads at once."""

    def link(self, image: Any, mention: str, context: str = "") -> LinkResult: ...


def top_ranked(ranked: list[Candidate], rationale: str, trace: list[TraceEvent], *, mention: str = "",
               perturbed: bool = False) -> LinkResult:
    """The answer of a pipeline that decides by similarity alone (baseline, tagger, retrieval):
    its top-ranked candidate, or NIL when it ranked none."""
    top = ranked[0] if ranked else None
    return LinkResult(
        entity=top.entity if top else None,
        score=top.score if top else 0.0,
        decided_by="fallback" if top else "nil",
        mention=mention,
        candidates=ranked,
        rationale=rationale,
        perturbed=perturbed,
        trace=trace,
    )


def agent_config(spec: Any, kb_path: Path | None = None) -> Any:
    """The agent config of a pipeline: preset/file, then overrides, then the run's KB (None: the
    pipeline's own `kb`, or none, for a caller that reads its other sections only)."""
    from retlink.agent.config import load_config
    from retlink.core.config import deep_merge

    if kb_path is None:
        kb_path = Path(spec.kb.path if spec.kb else ".")
    merged = deep_merge(load_config(spec.config).model_dump(mode="json"), spec.overrides)
    merged["kb"] = {**merged.get("kb", {}), "path": str(kb_path), "entities": None}
    return load_config(merged)


def agent_embedders(cfg: Any) -> tuple[Any, Any]:
    """(text, image) embedders of an agent config: what a pipeline of an agent-config kind
    embeds its own KB with (shared process-wide)."""
    from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder

    emb = cfg.embedder
    return (
        shared_text_embedder(emb.text_model, cfg.device),
        shared_image_embedder(emb.image_backend, emb.open_clip_model, emb.open_clip_pretrained, cfg.device, emb.image_weights),
    )
