"""caption: ask the configured vision model what the image shows."""

from __future__ import annotations

import logging
from typing import Any

from retlink.core.errors import BackendError
from retlink.core.types import Caption
from retlink.tools.images import from_pixels
from retlink.tools.vision.base import Captioner

log = logging.getLogger(__name__)


def caption(state: dict[str, Any], *, captioner: Captioner) -> dict[str, Any]:
    """A failing captioner degrades to an empty caption: the text side can still link."""
    if state.get("pixels") is None:
        return {"_skipped": "no image: nothing to caption"}
    try:
        cap = captioner.caption(from_pixels(state["pixels"]))
    except BackendError as e:
        log.warning("captioner failed: %s", e)
        return {"caption": Caption(text="", backend=captioner.name), "_skipped": f"captioner failed: {e}"}
    detail = {"confidence": round(cap.confidence, 4), "labels": [lbl for lbl, _ in cap.labels[:3]]}
    if cap.model:
        detail["model"] = cap.model
    return {"caption": cap, "_detail": detail}
