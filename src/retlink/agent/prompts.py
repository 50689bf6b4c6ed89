"""Prompt text for the enhancer and the reasoner, in one place.

Written for small models: short, with the answer format stated last. Evidence from search is
untrusted: it is fenced and labelled, and the answer itself is constrained by the backend to
the candidate ids, so text inside a page cannot change the answer format.
"""

from __future__ import annotations

from retlink.core.schema import PromptConfig
from retlink.core.types import Candidate, Caption, Evidence
from retlink.tools.scrape.untrusted import PREAMBLE, render_untrusted

REASONER_SYSTEM = (
    "You are an entity linking assistant. Decide which knowledge-base entity the marked mention "
    "refers to, using the sentence, the image description and the candidate descriptions."
)
#: the answer format; asked last, after the per-link parts (`reasoner.prompt.instructions: last`)
REASONER_INSTRUCTIONS = (
    "In one or two sentences, say which candidate fits the sentence and the image. "
    "Then write 'Answer:' and the candidate id."
)
#: the same task and format, stated once in the system message (`instructions: system`): the same
#: text in every reasoner call, so its KV state is prefilled once (the in-process prefix cache)
REASONER_SYSTEM_WITH_INSTRUCTIONS = (
    "You are an entity linking assistant. Decide which knowledge-base entity the marked mention "
    "refers to, using the sentence, the image description and the candidate descriptions. "
    "In one or two sentences, say which candidate fits the sentence and the image. "
    "Then write 'Answer:' and the candidate id."
)
REPAIR_INSTRUCTIONS = "Reply with only the id of the best candidate after 'Answer:'."

ENHANCER_SYSTEM = "You write short, factual descriptions of entities using only the facts given to you."


def describe_caption(caption: Caption | None) -> str:
    if caption is None or (not caption.labels and not caption.text):
        return "unavailable"
    if caption.labels:
        return ", ".join(label for label, p in caption.labels[:3])
    return caption.text


def clip_text(text: str, max_chars: int | None) -> str:
    """`text` cut to at most about `max_chars` characters at a word boundary, marked with "..."
    when cut (None: unchanged)."""
    text = " ".join(text.split())
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0] if " " in text[:max_chars] else text[:max_chars]
    return cut.rstrip(" ,;:.") + "..."


def reasoner_parts(
    mention: str,
    context: str,
    caption: Caption | None,
    candidates: list[Candidate],
    evidence: list[Evidence],
    *,
    repair: bool = False,
    image_first: bool = False,
    prompt: PromptConfig = PromptConfig(),
    summary: str | None = None,
) -> list[tuple[str, str]]:
    """The reasoner's prompt as named parts, in order: ("system", ...), then the user message's
    "sentence", "mention", "caption", "candidates" (one part per candidate, then "nil"),
    "evidence" and "instructions" (those that apply). What `bench/prompt_tokens.py` counts.
    `summary` (modality summarisation, `summary.enabled`) is the image in words: it replaces the
    image description in the "caption" part."""
    system = REASONER_SYSTEM_WITH_INSTRUCTIONS if prompt.instructions == "system" else REASONER_SYSTEM
    compact = prompt.evidence_fence == "compact"
    if compact and prompt.evidence_chars:  # the notice is the same in every call: state it once, up front
        system += " " + PREAMBLE
    text = [("sentence", f"Sentence: {context}"), ("mention", f"Mention: {mention}")]
    image = [("caption", f"Image shows (from a vision model, may be wrong): {describe_caption(caption)}")]
    if summary:
        image = [("caption", f"Image, in words (from a vision model, may be wrong): {summary}")]
    parts = [("system", system), *(image + text if image_first else text + image), ("candidates", "Candidates:")]
    for c in candidates:
        desc = clip_text(c.enhanced_description or c.entity.description, prompt.description_chars)
        parts.append(("candidate", f"- {c.entity.id}: {c.entity.name}. {desc}"))
    parts.append(("nil", "- NIL: none of the candidates"))
    fenced = (
        render_untrusted(evidence, max_chars=prompt.evidence_chars, preamble=not compact, source=not compact)
        if prompt.evidence_chars
        else ""
    )
    if fenced and not repair:
        parts.append(("evidence", "\n" + fenced))
    if repair:
        parts.append(("instructions", "\n" + REPAIR_INSTRUCTIONS))
    elif prompt.instructions == "last":
        parts.append(("instructions", "\n" + REASONER_INSTRUCTIONS))
    return parts


def reasoner_messages(
    mention: str,
    context: str,
    caption: Caption | None,
    candidates: list[Candidate],
    evidence: list[Evidence],
    *,
    repair: bool = False,
    image_first: bool = False,
    prompt: PromptConfig = PromptConfig(),
    summary: str | None = None,
) -> list[dict[str, str]]:
    """The reasoner's prompt. `image_first` puts the image description before the sentence: the
    modality-order permutation of the robustness studies (`reasoner.modality_order`), which asks
    whether a small model's answer depends on which modality it reads first. `prompt` says what
    the prompt holds (`reasoner.prompt`): with `instructions: system` the task and answer format
    are the whole system message and the user message holds only this link's parts, so every call
    shares its longest possible prefix."""
    parts = reasoner_parts(
        mention, context, caption, candidates, evidence, repair=repair, image_first=image_first, prompt=prompt,
        summary=summary,
    )
    system, user = parts[0][1], "\n".join(text for _, text in parts[1:])
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def enhancer_messages(candidate: Candidate, evidence: list[Evidence]) -> list[dict[str, str]]:
    e = candidate.entity
    user = (
        f"Entity: {e.name}\nKnown description: {e.description}\n\n{render_untrusted(evidence, max_chars=700)}\n\n"
        f"Write one sentence describing {e.name}, using only facts stated above."
    )
    return [{"role": "system", "content": ENHANCER_SYSTEM}, {"role": "user", "content": user}]


def kb_enhancer_messages(candidate: Candidate) -> list[dict[str, str]]:
    """The enhancer's prompt when no web evidence is about the candidate: its KB entry only
    (so the answer depends on the KB alone and is cached per entity)."""
    e = candidate.entity
    alias = f"\nAlso known as: {', '.join(e.aliases)}" if e.aliases else ""
    user = (
        f"Entity: {e.name}{alias}\nKnown description: {e.description}\n\n"
        f"Write one sentence describing {e.name}, using only facts stated above."
    )
    return [{"role": "system", "content": ENHANCER_SYSTEM}, {"role": "user", "content": user}]
