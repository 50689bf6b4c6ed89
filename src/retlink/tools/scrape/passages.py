"""Choose the passages worth an LLM's context: split pages, score against the query, fit a budget.

A small reasoner reads a few hundred tokens per candidate, not whole pages. Pages are split into
passages of bounded size at paragraph and sentence boundaries, scored by query-term overlap
weighted by rarity (a BM25-like score across all passages of the query), and picked greedily
within a token budget: first the best passage of every page (so one long page cannot crowd out
the others), then the next best, at most `per_doc` per page.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass

_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPACE = re.compile(r"\s+")
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "from",
        "that",
        "this",
        "are",
        "was",
        "were",
        "his",
        "her",
        "its",
        "their",
        "who",
        "what",
        "which",
        "when",
        "where",
        "how",
        "not",
        "but",
        "all",
        "any",
        "can",
        "has",
        "have",
        "had",
        "been",
        "one",
        "two",
        "into",
        "about",
        "also",
        "more",
        "most",
        "other",
        "some",
        "such",
        "than",
        "then",
        "there",
        "these",
        "they",
        "them",
        "our",
        "you",
        "your",
    ]
)


def content_hash(text: str) -> str:
    """Hash of the text up to case and whitespace: the same article on two URLs hashes equal."""
    return hashlib.sha256(_SPACE.sub(" ", text).strip().lower().encode("utf-8")).hexdigest()


def estimate_tokens(text: str) -> int:
    """Rough token count (about 4 characters a token for English); no tokenizer needed."""
    return math.ceil(len(text) / 4)


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP]


def _cut(text: str, max_chars: int) -> list[str]:
    """Pieces of at most max_chars, cut at sentence ends, else at spaces, else hard."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return pieces


def split_passages(text: str, max_chars: int) -> list[str]:
    """Passages of at most max_chars: paragraphs (short ones packed together), long ones cut."""
    units: list[str] = []
    for para in text.split("\n"):
        para = _SPACE.sub(" ", para).strip()
        if para:
            units.extend(_cut(para, max_chars) if len(para) > max_chars else [para])
    passages: list[str] = []
    current = ""
    for unit in units:
        if current and len(current) + 1 + len(unit) > max_chars:
            passages.append(current)
            current = unit
        else:
            current = f"{current} {unit}".strip()
    if current:
        passages.append(current)
    return passages


@dataclass
class _Scored:
    doc: int
    pos: int
    text: str
    score: float


def select_passages(
    docs: list[str], query: str, *, max_chars: int, per_doc: int, max_tokens: int
) -> list[list[str]]:
    """For each document (in search-rank order), its chosen passages in document order.

    Documents may end up with no passage when the budget is spent; earlier ranks win ties.
    """
    split = [split_passages(d, max_chars) for d in docs]
    all_terms = [Counter(_terms(p)) for ps in split for p in ps]
    n = max(1, len(all_terms))
    df: Counter[str] = Counter()
    for tf in all_terms:
        df.update(tf.keys())
    q = set(_terms(query))
    scored: list[_Scored] = []
    flat = iter(all_terms)
    for d, ps in enumerate(split):
        for pos, text in enumerate(ps):
            tf = next(flat)
            score = sum(math.log(1 + n / df[t]) * (1 + math.log(tf[t])) for t in q if tf[t])
            # The opening passage usually defines the subject; rank and position break ties.
            score += (0.5 if pos == 0 else 0.0) - 0.01 * d - 0.001 * pos
            scored.append(_Scored(d, pos, text, score))
    by_score = sorted(scored, key=lambda s: -s.score)
    chosen: list[_Scored] = []
    taken: set[tuple[int, int]] = set()
    used = 0
    counts: Counter[int] = Counter()
    for first_round in (True, False):
        for s in by_score:
            if (first_round and counts[s.doc]) or counts[s.doc] >= per_doc or (s.doc, s.pos) in taken:
                continue
            cost = estimate_tokens(s.text)
            if used + cost > max_tokens:
                continue
            chosen.append(s)
            taken.add((s.doc, s.pos))
            counts[s.doc] += 1
            used += cost
    out: list[list[str]] = [[] for _ in docs]
    for s in sorted(chosen, key=lambda s: (s.doc, s.pos)):
        out[s.doc].append(s.text)
    return out
