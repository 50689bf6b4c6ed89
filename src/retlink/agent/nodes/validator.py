"""validate: turn the raw inputs into a checked image, mention and context (or a typed error).

Either modality may be missing, as long as something is left to link from: no image (text
only: captioning and image retrieval are skipped) or no mention and no sentence (image only,
the I2T setting: the caption and the image carry the link, the alias table is unused).
"""

from __future__ import annotations

from typing import Any

from retlink.core.errors import EmptyMentionError, InputError, TextTooLongError
from retlink.core.schema import LimitsConfig
from retlink.tools.images import load_image, to_pixels


def check_unicode(text: str, field: str) -> str:
    """`text` if it is valid Unicode, an InputError naming `field` otherwise.

    Bytes that are not UTF-8 reach Python as lone surrogates (a command line's arguments are
    decoded with `surrogateescape`, JSON allows an unpaired `\\ud800`); they cannot be encoded
    again, so the tokenizer, chromadb or a JSON writer would fail on them mid-link."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(
            f"the {field} is not valid Unicode (a lone surrogate or a byte that is not UTF-8 at character {e.start})"
        ) from None
    return text


def check_text(
    mention: str | None, context: str | None, limits: LimitsConfig, *, image: bool = False
) -> tuple[str, str]:
    """The stripped mention and context (the mention when no context is given), or a typed error.
    The mention may be empty when there is an `image` (an image-only link).

    One check for every entry point: the CLI calls it before loading models, the endpoint
    before taking a slot, and the graph's validate node for Python callers.
    """
    mention = (mention or "").strip()
    if not mention and not image:
        raise EmptyMentionError(
            "the mention is empty and there is no image: nothing to link "
            "(say which words in the text name the entity, or give an image)"
        )
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
    has_image = state.get("image") is not None
    mention, context = check_text(state.get("mention"), state.get("context"), limits, image=has_image)
    if not has_image:
        return {"pixels": None, "mention": mention, "context": context, "_detail": {"image": None, "mode": "text only"}}
    pil = load_image(state.get("image"), max_pixels=limits.max_pixels, max_bytes=limits.max_bytes, min_side=limits.min_side)
    detail: dict[str, Any] = {"width": pil.width, "height": pil.height}
    if not mention:
        detail["mode"] = "image only"
    return {"pixels": to_pixels(pil), "mention": mention, "context": context, "_detail": detail}
