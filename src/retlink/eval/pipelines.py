"""The pipelines an eval config can compare, behind one registry (the lm-eval "task registry" idea).

A pipeline is anything with `link(image, mention, context) -> LinkResult` (and optionally
`gold(clean_image) -> id`, when a sample's gold answer is the pipeline's own, as for the tagger).
The kinds cover every level of a defence evaluation:
- `baseline`: the CLIP-style similarity linker (`retlink.eval.baseline.CLIPBaseline`);
- `agent`: the LangGraph agent (`retlink.Linker`) from a preset or YAML file plus overrides, e.g.
  `{search: {enabled: false}}` for the agent without search;
- `tagger` and `retrieval` (`retlink.eval.levels`): the captioner's classifier and KB image
  retrieval alone, on the image the agent config's defences would let through;
- `certified` (`retlink.eval.certified`): the mention's alias candidates ranked by image
  thumbnail distance, each answer with its certified L-inf radius.
Every pipeline of a run ranks the same KB: the run's `kb.path` replaces the agent config's, so a
comparison never mixes knowledge bases. The one exception is a pipeline with its own `kb:` (the
same entities embedded with another image embedder, e.g. EfficientNet-Lite1 for encoder
diversity). Register more kinds with `@register_pipeline("name")`; what every kind shares (the `Pipeline`
protocol, `top_ranked`, the agent config a pipeline reads) is `retlink.eval.pipeline_base`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retlink.eval.pipeline_base import AGENT_CONFIG_KINDS, Pipeline, agent_config, agent_embedders

log = logging.getLogger(__name__)


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
        return agent_embedders(agent_config(spec))
    if spec.kind == "certified":
        from retlink.eval.certified import CertifiedConfig

        cert = CertifiedConfig.model_validate(spec.options)
        return shared_text_embedder(), shared_image_embedder(cert.image_backend, weights=cert.image_weights)
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


@register_pipeline("tagger")
def build_tagger(spec: Any, kb_path: Path) -> Pipeline:
    """The captioner's classifier alone, on the defended image (`retlink.eval.levels`)."""
    from retlink.eval.levels import TaggerLevel

    return TaggerLevel(spec, kb_path)


@register_pipeline("retrieval")
def build_retrieval(spec: Any, kb_path: Path) -> Pipeline:
    """KB image retrieval alone, on the defended image (`retlink.eval.levels`)."""
    from retlink.eval.levels import RetrievalLevel

    return RetrievalLevel(spec, kb_path)


@register_pipeline("certified")
def build_certified(spec: Any, kb_path: Path) -> Pipeline:
    """Alias candidates ranked by thumbnail distance, with a certificate (`retlink.eval.certified`)."""
    from retlink.eval.certified import CertifiedConfig, CertifiedLinker

    return CertifiedLinker.from_kb(kb_path, CertifiedConfig.model_validate(spec.options))


def pipeline_image_encoder(spec: Any) -> str | None:
    """The image encoder (network and weights, `weights_id`) a pipeline embeds images with: what
    an attack must be made on to be white box against it. None for kinds without one (the
    certified pipeline without `deep`) or an agent config that no longer loads."""
    from retlink.core.errors import ConfigError
    from retlink.tools.vision.weights import open_clip_id, weights_id

    if spec.kind in AGENT_CONFIG_KINDS:
        try:
            emb = agent_config(spec).embedder
            if emb.image_backend == "open_clip":
                return open_clip_id(emb.open_clip_model, emb.open_clip_pretrained)
        except ConfigError:
            return None
        return None if emb.image_backend == "none" else weights_id(emb.image_backend, emb.image_weights)
    if spec.kind == "certified":
        from retlink.eval.certified import CertifiedConfig

        cert = CertifiedConfig.model_validate(spec.options)
        return weights_id(cert.image_backend, cert.image_weights) if cert.deep else None  # canonical name: ImageBackend
    if spec.kind == "baseline":
        from retlink.eval.baseline import BaselineConfig

        backend = str(BaselineConfig.model_validate(spec.options).image_backend)
        return None if backend in ("open_clip", "none") else backend  # its open_clip model is not configurable
    return None


def attack_encoder(spec: Any) -> str:
    """The image encoder an attack (`AttackSpec`) was made on, as `weights_id` names it."""
    from retlink.core.errors import ConfigError
    from retlink.tools.vision.weights import open_clip_id, weights_id

    if spec.surrogate.startswith("open_clip:"):
        try:
            return open_clip_id(spec.surrogate.split(":", 1)[1], spec.pretrained)
        except ConfigError:
            return spec.surrogate
    if "+" in spec.surrogate:
        return spec.surrogate
    return weights_id(spec.surrogate, spec.pretrained)


def is_transfer(pipeline_encoder: str | None, attack: str) -> bool:
    """An attack made on other weights than the pipeline's image encoder (an ensemble that
    includes them counts as white box)."""
    return pipeline_encoder is not None and pipeline_encoder not in attack.split("+")
