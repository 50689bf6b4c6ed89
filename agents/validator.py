"""validate: turn the raw inputs into a checked image, mention and context (or a typed error)."""

from __future__ import annotations

from typing import Any

from retlink.config import LimitsConfig
from retlink.errors import EmptyMentionError
from retlink.tools.images import load_image


def validate(state: dict[str, Any], *, limits: LimitsConfig) -> dict[str, Any]:
    mention = (state.get("mention") or "").strip()
    if not mention:
        raise EmptyMentionError("the mention is empty: say which words in the text name the entity")
    context = (state.get("context") or "").strip() or mention
    pil = load_image(state.get("image"), max_pixels=limits.max_pixels, max_bytes=limits.max_bytes, min_side=limits.min_side)
    return {
        "pil": pil,
        "mention": mention,
        "context": context,
        "_detail": {"width": pil.width, "height": pil.height},
    }
