"""The pipelines an eval config can compare, behind one registry (the lm-eval "task registry" idea).

A pipeline is anything with `link(image, mention, context) -> LinkResult` (and optionally
`gold(clean_image) -> id`, when a sample's gold answer is the pipeline's own, as for the tagger).
The kinds cover every level of a defence evaluation:
- `baseline`: the CLIP-style similarity linker (`retlink.eval.baseline.CLIPBaseline`);
- `agent`: the LangGraph agent (`retlink.Linker`) from a preset or YAML file plus overrides, e.g.
  `{search: {enabled: false}}` for the agent without search;
- `tagger` and `retrieval` (`retlink.eval.levels`): the captioner's classifier and KB image
  retrieval alone, on the image the agent config's defences would let through.
Every pipeline of a run ranks the same KB: the run's `kb.path` replaces the agent config's, so a
comparison never mixes knowledge bases. The one exception is a pipeline with its own `kb:` (the
same entities embedded with another image embedder, e.g. EfficientNet-Lite1 for encoder
diversity). Register more kinds with `@register_pipeline("name")`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from retlink.core.types import Candidate, LinkResult, TraceEvent
from retlink.eval.config import AGENT_CONFIG_KINDS

log = logging.getLogger(__name__)


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


Factory = Callable[[Any, Path], Pipeline]
PIPELINES: dict[str, Factory] = {}


def register_pipeline(kind: str) -> Callable[[Factory], Factory]:
    """Decorator: make `factory(spec, kb_path) -> Pipeline` reachable as `kind:` in configs."""

    def deco(factory: Factory) -> Factory:
        if kind in PIPELINES and PIPELINES[kind] is not factory:
            raise ValueError(f"pipeline kind {kind!r} registered twice")
        PIPELINES[kind] = factory
        return factory

    return deco


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


@register_pipeline("agent")
def build_agent(spec: Any, kb_path: Path) -> Pipeline:
    """The LangGraph agent; models are shared process-wide, so several agent pipelines are cheap."""
    from retlink.agent.linker import Linker

    return Linker.from_config(agent_config(spec, kb_path))


@register_pipeline("baseline")
def build_baseline(spec: Any, kb_path: Path) -> Pipeline:
    """The CLIP-style fused-similarity baseline on the run's KB (the embedded default's embedders)."""
    from retlink.eval.baseline import BaselineConfig, CLIPBaseline

    return CLIPBaseline.from_kb(kb_path, BaselineConfig.model_validate(spec.options))


def pipeline_embedders(spec: Any) -> tuple[Any, Any]:
    """(text, image) embedders a pipeline opens its KB with, to build its own KB (`spec.kb`)."""
    from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder

    if spec.kind in AGENT_CONFIG_KINDS:
        cfg = agent_config(spec)
        emb = cfg.embedder
        return (
            shared_text_embedder(emb.text_model, cfg.device),
            shared_image_embedder(emb.image_backend, emb.open_clip_model, emb.open_clip_pretrained, cfg.device),
        )
    if spec.kind == "baseline":
        from retlink.eval.baseline import BaselineConfig

        return shared_text_embedder(), shared_image_embedder(BaselineConfig.model_validate(spec.options).image_backend)
    return shared_text_embedder(), shared_image_embedder()


def pipeline_defence(spec: Any) -> Any:
    """The defence config a pipeline runs with (what `attack: adaptive` adapts to); the
    baseline has none."""
    from retlink.core.schema import DefenceConfig

    return agent_config(spec).defence if spec.kind in AGENT_CONFIG_KINDS else DefenceConfig()


def build_pipeline(spec: Any, kb_path: Path) -> Pipeline:
    """Instantiate one `PipelineSpec`."""
    log.info("building pipeline %s (%s)", spec.name, spec.kind)
    return PIPELINES[spec.kind](spec, Path(kb_path))


from retlink.eval import levels  # noqa: E402, F401  (registers `tagger` and `retrieval`)
