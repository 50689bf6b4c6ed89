"""summarize: modality summarisation, the image turned into text the text side reads.

The text-centric adversarial prompting method (Tsai et al. 2024) converts every modality to text
and has the language model reason over one summary. Here (`summary.enabled`) the captioner's
caption and the tagger's labels become one text (`summary` in the state) that the retriever
appends to the text embedder's query and the reasoner's prompt shows in place of the image
description. With `mode: llm` the language model writes the summary from the sentence and that
text; a reply that is empty or drops the mention (a summary about something else) falls back
to the template, and a failing backend too: the link goes on either way.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from retlink.core.errors import BackendError
from retlink.core.schema import SummaryConfig
from retlink.core.types import Caption
from retlink.tools.llm.base import LLM, llm_calls

log = logging.getLogger(__name__)

SUMMARY_SYSTEM = (
    'In one sentence, summarise what the sentence and the image description say about "{mention}". '
    "Reply with the summary only."
)


def image_in_words(caption: Caption | None, labels: int = 3) -> str:
    """The template summary: the caption's text and the tagger's top labels ('' without either).
    A tagger's caption that only lists its labels is not repeated."""
    if caption is None:
        return ""
    tags = [label for label, _ in caption.labels[:labels]]
    parts = []
    text = caption.text.strip()
    if text and not text.startswith("A photo that shows:"):  # the tagger's caption is its labels again
        parts.append(f"The image shows: {text.rstrip('.')}.")
    if tags:
        parts.append(f"Tags: {', '.join(tags)}.")
    return " ".join(parts)


def summary_messages(mention: str, context: str, described: str) -> list[dict[str, str]]:
    """The llm mode's prompt: the sentence and the image in words."""
    return [
        {"role": "system", "content": SUMMARY_SYSTEM.format(mention=mention or "the mention")},
        {"role": "user", "content": f"Sentence: {context}\nImage: {described}"},
    ]


def summarize(state: dict[str, Any], *, cfg: SummaryConfig, llm: LLM | None) -> dict[str, Any]:
    if state.get("pixels") is None:
        return {"_skipped": "no image: nothing to summarise"}
    described = image_in_words(state.get("caption"), cfg.labels)
    if not described:
        return {"_skipped": "no caption or labels"}
    if cfg.mode == "template" or llm is None:
        return {"summary": described, "_detail": {"mode": "template", "summary": described}}
    mention = state.get("mention") or ""
    try:
        gen = llm.generate(summary_messages(mention, state.get("context") or "", described), max_tokens=cfg.max_tokens)
    except BackendError as e:
        log.warning("summary LLM failed: %s", e)
        return {"summary": described, "_skipped": f"summary LLM failed: {e}; template used",
                "_detail": {"mode": "template", "summary": described}}
    lines = [ln.strip() for ln in gen.text.splitlines() if ln.strip()]
    text = re.sub(r"^summary\s*:\s*", "", lines[0], flags=re.IGNORECASE).strip() if lines else ""
    detail: dict[str, Any] = {"llm_calls": llm_calls([gen])}
    if not text or (mention and mention.lower() not in text.lower()):
        why = "empty summary" if not text else "summary without the mention"
        return {"summary": described, "_skipped": f"{why}; template used", "_detail": {**detail, "mode": "template",
                "summary": described}}
    return {"summary": text, "_detail": {**detail, "mode": "llm", "summary": text}}
