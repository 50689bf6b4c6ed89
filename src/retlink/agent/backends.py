"""Config -> backends. The one place that maps a role's configured backend to a class.

Models load once per process: each factory below is cached on the configuration values it
depends on, so two Linkers with the same models share them (and their memory).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from retlink.agent.config import RetlinkConfig, load_config
from retlink.agent.nodes.decide import llm_unused
from retlink.core.errors import ConfigError
from retlink.core.schema import CaptionerConfig, LLMConfig
from retlink.tools.kb.build import ensure_built
from retlink.tools.kb.embedders import (
    ImageEmbedder,
    TextEmbedder,
    shared_image_embedder,
    shared_text_embedder,
)
from retlink.tools.kb.location import kb_location
from retlink.tools.kb.store import KBStore
from retlink.tools.llm.base import LLM
from retlink.tools.lru import LRU
from retlink.tools.search.base import SearchBackend
from retlink.tools.vision.base import Captioner

log = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything the graph's nodes need, built from one config."""

    config: RetlinkConfig
    captioner: Captioner
    text_embedder: TextEmbedder
    image_embedder: ImageEmbedder | None
    kb: KBStore
    reasoner_llm: LLM | None
    enhancer_llm: LLM | None
    search_backends: list[SearchBackend]
    scraper: Any = None
    detector: Any = None
    #: the trained decision head (`decision.head`), None for the hand-set blend
    head: Any = None
    description_cache: LRU = field(default_factory=LRU)
    #: KB-only enhanced descriptions on disk (`enhancer.cache_dir`), None: memory only
    description_store: Any = None
    #: the model that writes the modality summary (`summary.mode: llm`), None otherwise
    summary_llm: LLM | None = None


@lru_cache(maxsize=8)
def shared_llm(cfg: LLMConfig, device: str = "cpu") -> LLM:
    """One model instance per distinct LLM config."""
    if cfg.backend == "transformers":
        from retlink.tools.llm.transformers_llm import TransformersLLM

        return TransformersLLM(
            cfg.model,
            device=device,
            threads=cfg.threads,
            batch_window_s=cfg.batch_window_ms / 1000,
            max_batch_rows=cfg.batch_rows,
            prefix_cache=cfg.prefix_cache,
            quantize=cfg.quantize,
        )
    if cfg.backend == "openai":
        from retlink.tools.llm.openai_llm import OpenAILLM  # issue 4

        return OpenAILLM.from_config(cfg)
    raise ConfigError(f"unknown LLM backend {cfg.backend!r}")


@lru_cache(maxsize=8)
def shared_captioner(cfg: CaptionerConfig, device: str = "cpu") -> Captioner:
    if cfg.backend == "efficientnet_tagger":
        from retlink.tools.vision.tagger import ImageNetTagger

        return ImageNetTagger(top_k=cfg.top_k, device=device, network=cfg.vision_model, weights=cfg.image_weights)
    if cfg.backend == "openai_vlm":
        from retlink.tools.vision.openai_vlm import OpenAIVLMCaptioner  # issue 4

        return OpenAIVLMCaptioner.from_config(cfg)
    raise ConfigError(f"unknown captioner backend {cfg.backend!r}")


def ensure_kb(cfg: RetlinkConfig, text_embedder: TextEmbedder, image_embedder: ImageEmbedder | None) -> KBStore:
    """Open the KB (`kb.path`, or `kb.name` on `kb.server`), building it first from `kb.entities`
    when it holds none yet (or a stale one; one process builds, under the KB's build lock)."""
    location = kb_location(cfg.kb)
    if cfg.kb.entities is not None:
        ensure_built(Path(cfg.kb.entities), location, text_embedder, image_embedder)
    return KBStore(location, text_embedder, image_embedder)


@lru_cache(maxsize=8)
def _kb_for(cfg_json: str) -> KBStore:
    """One open KB per (KB, embedder) configuration."""
    cfg = RetlinkConfig.model_validate_json(cfg_json)
    emb = cfg.embedder
    return ensure_kb(
        cfg,
        shared_text_embedder(emb.text_model, cfg.device),
        shared_image_embedder(emb.image_backend, emb.open_clip_model, emb.open_clip_pretrained, cfg.device, emb.image_weights),
    )


def open_kb(source: Any = None) -> KBStore:
    """The KB a config links against (built first when missing), shared with its Linkers: the
    evaluation scores image retrieval on the very store the pipeline queries."""
    cfg = load_config(source)
    return _kb_for(cfg.model_dump_json(include={"kb", "embedder", "device"}))


def build_components(source: Any = None) -> Components:
    """Build (or reuse) every backend the config names.

    One after another, on purpose (issue 20 tried threads): transformers' `from_pretrained`
    swaps process-wide state while it loads (it replaces `torch.nn.init`'s functions and
    `PreTrainedModel.init_weights` with no-ops, restoring what it saved when it ends, and builds
    the model under a meta-device context), so two loads at once may restore each other's
    no-ops and a network built beside a load may skip its init. Loading the LLM, the text
    embedder and the EfficientNet in three threads failed in two of three tries ("Cannot copy
    out of meta tensor"), and importing transformers from two threads at once failed too
    ("cannot import name 'AutoModelForCausalLM'"). Nor is there much to win on two cores: most
    of a cold start is imports, which hold the GIL, and building the models once their modules
    were imported took about 1.5 s of the ~18 (and no less in threads, one-off)."""
    cfg = load_config(source)
    emb = cfg.embedder
    text_embedder = shared_text_embedder(emb.text_model, cfg.device)
    image_embedder = shared_image_embedder(emb.image_backend, emb.open_clip_model, emb.open_clip_pretrained, cfg.device, emb.image_weights)
    kb = open_kb(cfg)
    head = load_head(cfg, kb)
    # no reasoner, or a head that gives it weight 0: the graph never reaches search, enhancer or
    # reasoner, so the LLM is not even loaded
    unused = llm_unused(cfg.reasoner.enabled, head.reasoner_weight if head is not None else None)
    if unused is not None and cfg.reasoner.enabled:
        log.info("LLM not loaded: %s", unused)
    reasoner = shared_llm(cfg.reasoner.llm, cfg.device) if unused is None else None
    enhancer = None
    if cfg.enhancer.enabled and reasoner is not None:
        enhancer = shared_llm(cfg.enhancer.llm, cfg.device) if cfg.enhancer.llm else reasoner
    from retlink.tools.scrape import build_scraper
    from retlink.tools.search.factory import build_search_backends

    backends = build_search_backends(cfg.search, text_embedder)
    summary_llm = None
    if cfg.summary.enabled and cfg.summary.mode == "llm":  # loaded even when the reasoner is off
        summary_llm = shared_llm(cfg.summary.llm or cfg.reasoner.llm, cfg.device)
    return Components(
        config=cfg,
        captioner=shared_captioner(cfg.captioner, cfg.device),
        text_embedder=text_embedder,
        image_embedder=image_embedder,
        kb=kb,
        reasoner_llm=reasoner,
        enhancer_llm=enhancer,
        search_backends=backends,
        scraper=build_scraper(cfg.search) if backends else None,
        detector=_detector(cfg),
        head=head,
        description_store=_description_store(cfg),
        summary_llm=summary_llm,
    )


def _description_store(cfg: RetlinkConfig):
    """The on-disk store of KB-only descriptions, when the enhancer writes them."""
    if not (cfg.enhancer.enabled and cfg.enhancer.kb_only and cfg.enhancer.cache_dir is not None):
        return None
    from retlink.tools.kb.descriptions import DescriptionStore

    return DescriptionStore(cfg.enhancer.cache_dir)


def load_head(cfg: RetlinkConfig, kb: KBStore):
    """The decision head the config names, checked against the KB it will rank. `auto` is the
    shipped head where the KB's embedders are the ones it was fitted for, else no head: a KB
    built with other embedders still links, by the hand-set blend, and the log says why."""
    if cfg.decision.head is None:
        return None
    from retlink.agent.decision import DecisionHead, kb_fingerprint
    from retlink.agent.decision.features import FEATURES
    from retlink.core.config import AUTO_HEAD

    fingerprint = kb_fingerprint(kb.manifest)
    if cfg.decision.head == AUTO_HEAD:
        default = LLMConfig()
        if cfg.reasoner.enabled and (cfg.reasoner.llm.backend, cfg.reasoner.llm.model) != (default.backend, default.model):
            # the shipped head weighs the embedded default's reasoner (at 0); a reasoner the
            # config chose earns a weight only from a head fitted on links that include it
            log.info("decision.head auto: reasoner %s is not the embedded default's; no head, the reasoner decides",
                     cfg.reasoner.llm.model)
            return None
        try:
            return DecisionHead.load(AUTO_HEAD, features=FEATURES, fingerprint=fingerprint)
        except ConfigError as e:
            log.info("decision.head auto: no head for this KB (%s); the hand-set blend decides", e)
            return None
    return DecisionHead.load(cfg.decision.head, features=FEATURES, fingerprint=fingerprint)


def _detector(cfg: RetlinkConfig):
    """The feature-squeezing detector on its shared EfficientNet-Lite (`defence.detector.model`,
    its `image_weights` when tuned), when enabled."""
    if not cfg.defence.detector.enabled:
        return None
    from retlink.tools.vision.detector import SqueezeDetector
    from retlink.tools.vision.weights import network_with_weights

    det = cfg.defence.detector
    return SqueezeDetector(network_with_weights(det.model, det.image_weights, cfg.device), det.squeezers)
