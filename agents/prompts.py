"""Prompt text for the enhancer and the reasoner, in one place.

Written for small models: short, with the answer format stated last. Evidence from search is
untrusted: it is fenced and labelled, and the answer itself is constrained by the backend to
the candidate ids, so text inside a page cannot change the answer format.
"""

from __future__ import annotations

from retlink.tools.scrape.untrusted import render_untrusted
from retlink.types import Candidate, Caption, Evidence

REASONER_SYSTEM = (
    "You are an entity linking assistant. Decide which knowledge-base entity the marked mention "
    "refers to, using the sentence, the image description and the candidate descriptions."
)

ENHANCER_SYSTEM = "You write short, factual descriptions of entities using only the facts given to you."

def describe_caption(caption: Caption | None) -> str:
    if caption is None or (not caption.labels and not caption.text):
        return "unavailable"
    if caption.labels:
        return ", ".join(label for label, p in caption.labels[:3])
    return caption.text


def reasoner_messages(
    mention: str,
    context: str,
    caption: Caption | None,
    candidates: list[Candidate],
    evidence: list[Evidence],
    *,
    repair: bool = False,
    image_first: bool = False,
) -> list[dict[str, str]]:
    """The reasoner's prompt. `image_first` puts the image description before the sentence: the
    modality-order permutation of the robustness studies (`reasoner.modality_order`), which asks
    whether a small model's answer depends on which modality it reads first."""
    text = [f"Sentence: {context}", f"Mention: {mention}"]
    image = [f"Image shows (from a vision model, may be wrong): {describe_caption(caption)}"]
    lines = [*(image + text if image_first else text + image), "Candidates:"]
    for c in candidates:
        desc = c.enhanced_description or c.entity.description
        lines.append(f"- {c.entity.id}: {c.entity.name}. {desc}")
    lines.append("- NIL: none of the candidates")
    fenced = render_untrusted(evidence, max_chars=1200)
    if fenced and not repair:
        lines += ["", fenced]
    if repair:
        lines.append("\nReply with only the id of the best candidate after 'Answer:'.")
    else:
        lines.append(
            "\nIn one or two sentences, say which candidate fits the sentence and the image. "
            "Then write 'Answer:' and the candidate id."
        )
    return [{"role": "system", "content": REASONER_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


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
