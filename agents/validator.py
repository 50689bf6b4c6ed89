"""validate: turn the raw inputs into a checked image, mention and context (or a typed error)."""

from __future__ import annotations

from typing import Any

from retlink.config import LimitsConfig
from retlink.errors import EmptyMentionError, TextTooLongError
from retlink.tools.images import load_image


def check_text(mention: str | None, context: str | None, limits: LimitsConfig) -> tuple[str, str]:
    """The stripped mention and context (the mention when no context is given), or a typed error.

    One check for every entry point: the CLI calls it before loading models, the endpoint
    before taking a slot, and the graph's validate node for Python callers.
    """
    mention = (mention or "").strip()
    if not mention:
        raise EmptyMentionError("the mention is empty: say which words in the text name the entity")
    context = (context or "").strip() or mention
    for what, text, limit, key in (
        ("mention", mention, limits.max_mention_chars, "max_mention_chars"),
        ("context", context, limits.max_context_chars, "max_context_chars"),
    ):
        if len(text) > limit:
            raise TextTooLongError(
                f"the {what} is {len(text):,} characters, over the limit of {limit:,} (limits.{key})"
            )
    return mention, context


def validate(state: dict[str, Any], *, limits: LimitsConfig) -> dict[str, Any]:
    mention, context = check_text(state.get("mention"), state.get("context"), limits)
    pil = load_image(state.get("image"), max_pixels=limits.max_pixels, max_bytes=limits.max_bytes, min_side=limits.min_side)
    return {
        "pil": pil,
        "mention": mention,
        "context": context,
        "_detail": {"width": pil.width, "height": pil.height},
    }
