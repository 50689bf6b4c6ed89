"""detect and purify: cheap defences in front of the vision models.

detect flags an image whose predictions move too much under squeezing; the flag then routes
the rest of the graph (image weight down in retrieval, wider search) and is reported in the
LinkResult. purify replaces the image the captioner and image embedder see by a purified copy.
Both are recorded in the trace, including when they are off.
"""

from __future__ import annotations

from typing import Any

from retlink.core.schema import DefenceConfig, DetectorConfig
from retlink.tools.images import from_pixels, to_pixels
from retlink.tools.vision.detector import SqueezeDetector
from retlink.tools.vision.purify import purify_pil


def detect(state: dict[str, Any], *, detector: SqueezeDetector | None, cfg: DetectorConfig) -> dict[str, Any]:
    if state.get("pixels") is None:
        return {"_skipped": "no image"}
    if detector is None or not cfg.enabled:
        return {"_skipped": "detector disabled"}
    scores = detector.scores(from_pixels(state["pixels"]))
    worst = max(scores, key=scores.get)
    flagged = scores[worst] > cfg.threshold
    note = (
        f"image looks perturbed: its predictions moved by {scores[worst]:.2f} under {worst} "
        f"(threshold {cfg.threshold:.2f}); image evidence was down-weighted and the search widened"
        if flagged
        else ""
    )
    detail = {"scores": scores, "flagged": flagged, "model": getattr(detector, "network", None)}
    return {"perturbed": flagged, "perturbation_note": note, "detector_score": float(scores[worst]), "_detail": detail}


def purification_steps(state: dict[str, Any], cfg: DefenceConfig) -> list:
    """The configured steps, or the flagged-image steps when only the detector asked for it."""
    if cfg.purify:
        return list(cfg.purify)
    return list(cfg.purify_when_flagged) if state.get("perturbed") else []


def route_after_detect(state: dict[str, Any], *, cfg: DefenceConfig) -> str:
    """A flagged image always goes through purification; a clean one only when configured."""
    if state.get("pixels") is None:
        return "caption"
    return "purify" if purification_steps(state, cfg) else "caption"


def purify(state: dict[str, Any], *, cfg: DefenceConfig) -> dict[str, Any]:
    steps = purification_steps(state, cfg)
    purified = to_pixels(purify_pil(from_pixels(state["pixels"]), steps))
    return {"pixels": purified, "purified": True, "_detail": {"steps": [s.label() for s in steps]}}
