"""The image-level pipelines of the runner: the tagger alone and image retrieval alone.

The full agent (`kind: agent`) is one level of a defence evaluation; these are the two below it,
so that a defence's effect on what the image evidence itself says is measured apart from what the
text and the reasoner make of it. Both read the same agent config (`config` + `overrides`) as an
`agent` pipeline, so a defence is written once, in `defence:`, whatever the level:

- `tagger` (classifier level): the captioner's ImageNet network (`captioner.vision_model`), top-k
  classes of the image the defended graph would caption. A dataset has no ImageNet labels, so
  the gold label of a sample is the *undefended* network's top-1 on the clean image
  (`gold(clean)`): correct means "the label the bare model gives the clean photo".
- `retrieval`: the entities whose KB images are nearest to the image the defended graph would
  embed, by the pipeline's own image embedder and KB; correct means the gold entity.

The defended image comes from the graph's own node functions (`agent/nodes/defender.py`: detect,
the route after it, purify), so a flagged image takes the purification route exactly as in a
link, and the result says `perturbed` with the detector's score in the trace.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from retlink.core.types import Candidate, Entity, LinkResult, TraceEvent
from retlink.eval.pipeline_base import agent_config, agent_embedders, top_ranked


def defended_view(image: Image.Image, cfg: Any, detector: Any) -> tuple[Image.Image, bool, list[TraceEvent]]:
    """(image the captioner and embedder would see, flagged, trace) by the graph's own nodes."""
    from retlink.agent.nodes.defender import detect, purify, route_after_detect
    from retlink.agent.nodes.tracing import traced
    from retlink.tools.images import from_pixels, to_pixels

    state: dict[str, Any] = {"pixels": to_pixels(image)}
    trace: list[TraceEvent] = []

    def run(name: str, fn: Any, **deps: Any) -> None:
        update = traced(name, fn, **deps)(state)
        trace.extend(update.pop("trace"))
        state.update(update)

    run("detect", detect, detector=detector, cfg=cfg.detector)
    if route_after_detect(state, cfg=cfg) == "purify":
        run("purify", purify, cfg=cfg)
    view = from_pixels(state["pixels"]) if state.get("purified") else image  # untouched: the same image
    return view, bool(state.get("perturbed")), trace


class _ImageLevel:
    """Shared plumbing: the agent config's defence and detector on the image the runner gives."""

    name = "image-level"

    def __init__(self, spec: Any, kb_path: Path) -> None:
        from retlink.tools.vision.detector import SqueezeDetector
        from retlink.tools.vision.efficientnet import shared_network

        self.config = agent_config(spec, kb_path)
        det = self.config.defence.detector
        self.detector = SqueezeDetector(shared_network(det.model), det.squeezers) if det.enabled else None

    def _view(self, image: Any) -> tuple[Image.Image, bool, list[TraceEvent]]:
        from retlink.core.errors import InvalidImageError
        from retlink.tools.images import load_image

        if image is None:
            raise InvalidImageError(f"the {self.name} pipeline links images only; this sample has none")
        return defended_view(load_image(image).convert("RGB"), self.config.defence, self.detector)

    def _result(self, ranked: list[Candidate], flagged: bool, trace: list[TraceEvent]) -> LinkResult:
        return top_ranked(ranked, f"{self.name}: top-1 of the defended image", trace, perturbed=flagged)


class TaggerLevel(_ImageLevel):
    """The captioner's ImageNet network on the defended image; classes are entities `imagenet:<i>`."""

    name = "tagger"

    def __init__(self, spec: Any, kb_path: Path) -> None:
        from retlink.tools.vision.efficientnet import imagenet_labels
        from retlink.tools.vision.weights import network_with_weights, weights_id

        super().__init__(spec, kb_path)
        captioner = self.config.captioner
        self.model = network_with_weights(captioner.vision_model, captioner.image_weights)
        self.network = weights_id(captioner.vision_model, captioner.image_weights)  # for traces
        self.labels = imagenet_labels()
        self.top_k = self.config.captioner.top_k

    def _classes(self, x: torch.Tensor) -> list[tuple[int, float]]:
        with torch.inference_mode():
            probs = self.model(x.unsqueeze(0)).softmax(-1)[0]
        p, idx = probs.topk(self.top_k)
        return [(int(i), float(v)) for i, v in zip(idx, p, strict=True)]

    def _entity(self, index: int) -> Entity:
        return Entity(id=f"imagenet:{index}", name=self.labels[index])

    def gold(self, clean: torch.Tensor) -> str:
        """The undefended network's top-1 on the clean image: the reference label of a sample."""
        return self._entity(self._classes(clean)[0][0]).id

    def link(self, image: Any, mention: str = "", context: str = "") -> LinkResult:
        from retlink.tools.vision.efficientnet import preprocess

        view, flagged, trace = self._view(image)
        started = time.perf_counter()
        classes = self._classes(preprocess(view))
        trace.append(TraceEvent(node="tag", seconds=round(time.perf_counter() - started, 4), detail={"model": self.network}))
        ranked = [Candidate(entity=self._entity(i), score=round(p, 4)) for i, p in classes]
        return self._result(ranked, flagged, trace)


class RetrievalLevel(_ImageLevel):
    """KB image retrieval on the defended image, by the pipeline's own image embedder and KB."""

    name = "retrieval"

    def __init__(self, spec: Any, kb_path: Path) -> None:
        from retlink.core.errors import ConfigError
        from retlink.tools.kb.store import KBStore

        super().__init__(spec, kb_path)
        self.kb = KBStore(Path(kb_path), *agent_embedders(self.config))
        if not self.kb.has_images:
            raise ConfigError(f"pipeline {spec.name!r} (retrieval): the KB at {kb_path} has no images to retrieve")
        self.top_k = self.config.kb.top_k

    def link(self, image: Any, mention: str = "", context: str = "") -> LinkResult:
        view, flagged, trace = self._view(image)
        started = time.perf_counter()
        vector = self.kb.image_embedder.embed_images([view])[0]
        hits = self.kb.query_image(vector, self.top_k)
        trace.append(TraceEvent(node="retrieve_image", seconds=round(time.perf_counter() - started, 4)))
        entities = {e.id: e for e in self.kb.get([eid for eid, _ in hits])}
        ranked = [
            Candidate(entity=entities[eid], score=round(float(s), 4), image_score=round(float(s), 4))
            for eid, s in hits
            if eid in entities
        ]
        return self._result(ranked, flagged, trace)
