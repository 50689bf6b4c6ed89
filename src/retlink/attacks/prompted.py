"""LLM-instructed adversarial text perturbations: the text-centric adversarial prompting method.

Text-centric adversarial prompting (Tsai et al. 2024, "Enhance the Robustness of Multimodal
Models via Text-Centric Adversarial Prompting") perturbs the text a multimodal model reads by
asking an LLM to rewrite it adversarially in three ways: noise injection (misleading or
irrelevant additions), information dropout (the informative details left out) and permutation
(the parts of the text reordered). `kind: llm_perturb` in an eval setting's `text:` block runs
them on the sample's sentence, `instruction:` naming the family; the language model is any
`LLMConfig` (the embedded in-process SmolLM2 by default, a served model through `backend:
openai`). A fourth family, `reasoning`, is not adversarial: the LLM's chain of thought about what
the mention refers to, appended to the sentence (the paper's reasoning augmentation, what
`retlink train`'s `cot_augment` fits the decision head on).

Each rewrite must keep the mention: the reply is validated (its first line, without a label or
quotes; the mention present as a word; not the original sentence again; length within bounds).
A reply that fails, or a backend that fails, never stops the run: `fallback: rule` (the
default) applies the family's rule-based counterpart to the sentence with the mention's words
protected (character noise, word dropout, word permutation; the original for `reasoning`),
`fallback: original` keeps the sentence; either way the outcome and its reason are returned
(`Perturbed`) and the eval runner writes them into the link's record (`text_perturbation`).

Replies are stored under `$RETLINK_CACHE/perturbations/`, keyed by the model and the exact
prompt, so every pipeline of a run, a resumed run and a later run ask the model once per
sample; validation runs on the stored reply, and a failed backend call is not stored (a resume
asks again).
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from typing import Literal

from retlink.attacks.paraphrase import cache_path, loaded_llm
from retlink.attacks.text import char_noise
from retlink.core.errors import BackendError
from retlink.core.schema import LLMConfig
from retlink.tools.atomic import read_json_entry, write_json_atomic

log = logging.getLogger(__name__)

Instruction = Literal["noise_injection", "information_dropout", "permutation", "reasoning"]
#: the adversarial families (`reasoning` is the augmentation family)
ADVERSARIAL = ("noise_injection", "information_dropout", "permutation")

#: per family, the phrasings a seed picks from; `{mention}` is the word the rewrite must keep
PROMPTS: dict[str, tuple[str, ...]] = {
    "noise_injection": (
        "Rewrite the sentence so that it is harder to understand: add misleading details and "
        "irrelevant words, and change a few words to similar but wrong ones. Keep the word "
        '"{mention}" exactly as it is. Reply with the rewritten sentence only.',
        'Add distracting, irrelevant information to this sentence and keep the word "{mention}" '
        "unchanged. Reply with one rewritten sentence only.",
    ),
    "information_dropout": (
        "Rewrite the sentence leaving out its informative details (colours, places, web domains, "
        'descriptions), so that it says as little as possible. Keep the word "{mention}". '
        "Reply with the shortened sentence only.",
        'Shorten this sentence by removing the details that identify things; keep the word "{mention}". '
        "Reply with the short sentence only.",
    ),
    "permutation": (
        "Rewrite the sentence with its words and phrases in a different order, keeping every word, "
        'including "{mention}". Reply with the reordered sentence only.',
        'Reorder the parts of this sentence (move phrases to the front or the end); keep "{mention}" and '
        "the other words. Reply with the reordered sentence only.",
    ),
    "reasoning": (
        'Think step by step about what "{mention}" refers to in this sentence: which kind of thing it is '
        "and which clues the sentence gives. Answer in one or two sentences.",
    ),
}
#: an adversarial rewrite may grow to this many times the original (plus slack), and must keep
#: at least this share of it (an answer of three words is not a rewrite of a sentence)
MAX_GROWTH = 3.0
MIN_SHARE = 0.25
_PREFIX = re.compile(
    r"^(?:(?:rewritten|reordered|shortened|short|new) sentence|sentence|answer|output|rewrite|"
    r"(?:here'?s|here is|a revised|an alternative|the rewritten|revised)[^:]{0,80})\s*:\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Perturbed:
    """A perturbed sentence and how it was made: `llm` (the model's rewrite, validated) or
    `fallback` (with `reason`: why the rewrite was refused or the backend failed)."""

    text: str
    status: Literal["llm", "fallback"]
    reason: str | None = None

    def note(self, instruction: str) -> dict[str, str]:
        """What the eval record keeps (`text_perturbation`)."""
        out = {"kind": "llm_perturb", "instruction": instruction, "status": self.status}
        return out | ({"reason": self.reason} if self.reason else {})


def messages_for(text: str, mention: str, instruction: str, seed: int) -> list[dict[str, str]]:
    """The chat messages that ask for one family's rewrite of `text` (the seed picks the phrasing)."""
    phrasings = PROMPTS[instruction]
    system = phrasings[seed % len(phrasings)].format(mention=mention or "the name")
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


def has_mention(text: str, mention: str) -> bool:
    """The mention occurs in `text` as a whole word or phrase, as written: "air" does not keep the
    mention "Air" (a name lower-cased is often another word)."""
    return re.search(rf"(?<!\w){re.escape(mention.strip())}(?!\w)", text) is not None


def first_line(reply: str) -> str:
    """The reply's first non-empty line without a label or surrounding quotes."""
    lines = [ln.strip() for ln in reply.splitlines() if ln.strip()]
    return _PREFIX.sub("", lines[0]).strip().strip("\"'“”").strip() if lines else ""


def validate_rewrite(reply: str, original: str, mention: str, instruction: str) -> tuple[str | None, str | None]:
    """(the perturbed text, None) for a usable reply, else (None, why not).

    Adversarial families: the first line must hold the mention (when the original does), differ
    from the original and fall within the length bounds (a too long line is cut back to its first
    sentence first). `reasoning`: the first line(s) of thought, bounded, appended to the original."""
    if instruction == "reasoning":
        thought = " ".join(ln.strip() for ln in reply.splitlines() if ln.strip())
        if not thought:
            return None, "empty reply"
        limit = int(MAX_GROWTH * len(original)) + 20
        if len(thought) > limit:
            thought = thought[:limit].rsplit(" ", 1)[0]
        return f"{original} {thought}", None
    text = first_line(reply)
    if not text:
        return None, "empty reply"
    if len(text) > MAX_GROWTH * len(original) + 20:
        text = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
        if len(text) > MAX_GROWTH * len(original) + 20:
            return None, f"too long ({len(text)} characters for {len(original)})"
    if len(text) < MIN_SHARE * len(original):
        return None, f"too short ({len(text)} characters for {len(original)})"
    if mention.strip() and has_mention(original, mention) and not has_mention(text, mention):
        return None, f"the mention {mention!r} is missing"
    if " ".join(text.split()).lower() == " ".join(original.split()).lower():
        return None, "unchanged"
    return text, None


def rule_fallback(text: str, mention: str, instruction: str, seed: int) -> str:
    """The family's rule-based counterpart, never touching the mention's words: character noise
    (one edit in a third of the other words), word dropout (a third of the other words) or word
    permutation (the mention kept as one unit); the original for `reasoning`."""
    if instruction == "reasoning":
        return text
    protected = {w.lower() for w in mention.split()}
    rng = random.Random(seed)
    words = text.split()
    free = [i for i, w in enumerate(words) if w.strip(".,;:!?\"'()").lower() not in protected]
    if instruction == "noise_injection":
        for i in free:
            words[i] = char_noise(words[i], rate=1 / 3, seed=rng.randrange(2**31))
        return " ".join(words)
    if instruction == "information_dropout":
        drop = {i for i in free if rng.random() < 1 / 3}
        kept = [w for i, w in enumerate(words) if i not in drop]
        return " ".join(kept) if kept else text
    units: list[str] = []  # permutation: the mention's words stay together, in order
    for i, w in enumerate(words):
        if i not in free and units and i - 1 not in free:
            units[-1] += " " + w
        else:
            units.append(w)
    if len(set(units)) < 2:
        return text
    shuffled = units[:]
    while shuffled == units:
        rng.shuffle(shuffled)
    return " ".join(shuffled)


def llm_perturb(
    text: str,
    mention: str,
    *,
    instruction: str,
    seed: int,
    llm: LLMConfig | None = None,
    fallback: Literal["rule", "original"] = "rule",
    max_tokens: int = 48,
) -> Perturbed:
    """`text` rewritten by `llm` as `instruction` asks, validated; the fallback when it fails."""
    if instruction not in PROMPTS:
        raise ValueError(f"unknown instruction {instruction!r}; known: {', '.join(PROMPTS)}")
    if not text.strip():
        return Perturbed(text, "llm")
    cfg = llm or LLMConfig()
    messages = messages_for(text, mention, instruction, seed)
    path = cache_path(cfg, messages, max_tokens, folder="perturbations")
    entry = read_json_entry(path)
    reply: str | None = entry["reply"] if isinstance(entry, dict) and isinstance(entry.get("reply"), str) else None
    reason = None
    if reply is None:
        try:
            reply = loaded_llm(cfg).generate(messages, max_tokens=max_tokens).text
        except BackendError as e:  # not stored: a resumed run asks again
            reason = f"backend failed: {e}"
        else:
            try:
                write_json_atomic(path, {"text": text, "instruction": instruction, "model": cfg.model, "reply": reply})
            except OSError as e:  # a cache that cannot be written costs a repeat, never the run
                log.warning("perturbation not stored (%s): %s", path, e)
    if reply is not None:
        out, reason = validate_rewrite(reply, text, mention, instruction)
        if out is not None:
            return Perturbed(out, "llm")
    log.info("llm_perturb %s fell back to %s: %s", instruction, fallback, reason)
    fallen = rule_fallback(text, mention, instruction, seed) if fallback == "rule" else text
    return Perturbed(fallen, "fallback", reason)
