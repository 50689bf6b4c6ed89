"""Where a word substitution's candidates come from: a language model's predictions for the slot
(BERT-Attack, Li et al., 2020, asks a masked LM; here a causal LM, the in-process one, predicts
the word from the words before it), or, the cheap fallback, the word's nearest neighbours in the
text encoder's own input-embedding space (`retlink.attacks.text.token_neighbours`).

A proposer is `propose(words, positions) -> {position: [candidate words]}`: every position of
one sentence at once, so the language model runs one batched forward pass per sentence.
Candidates keep the original word's capitalisation and its surrounding punctuation.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import torch

#: `propose(words, positions)`: candidate replacements per position
Proposer = Callable[[list[str], list[int]], dict[int, list[str]]]

#: the candidate sources a text attack's `candidates` parameter names
CANDIDATE_SOURCES = ("lm", "embedding_neighbours")


def _recase(original: str, core: str, candidate: str) -> str:
    """`candidate` in place of `core` inside `original` (its punctuation kept), capitalised like it."""
    lead = len(original) - len(original.lstrip(string.punctuation))
    cased = candidate.capitalize() if core[:1].isupper() else candidate.lower()
    return original[:lead] + cased + original[lead + len(core) :]


def neighbour_proposer(encoder: Any, k: int) -> Proposer:
    """The fallback: each word's `k` nearest whole-word tokens in the encoder's input embeddings."""
    from retlink.attacks.text import token_neighbours

    per_word = token_neighbours(encoder, k)
    return lambda words, positions: {i: per_word(words[i]) for i in positions}


class LMProposer:
    """A causal LM's top-`k` next words for each slot, given the words before it.

    `model` and `tokenizer` are a transformers causal LM and its tokenizer (the in-process
    reasoner's: `TransformersLLM.model` / `.tokenizer`). Only vocabulary entries that are a whole
    alphabetic word of 2+ letters are candidates (a word-initial piece would need completing);
    the original word (any case) is left out.
    """

    def __init__(self, model: Any, tokenizer: Any, k: int = 8) -> None:
        self.model, self.tokenizer, self.k = model, tokenizer, k
        self.words_after_space, self.words_at_start = _word_tokens(tokenizer)

    @torch.no_grad()
    def __call__(self, words: list[str], positions: list[int]) -> dict[int, list[str]]:
        if not positions:
            return {}
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        rows = [[start, *tok(" ".join(words[:i]), add_special_tokens=False).input_ids] if i else [start] for i in positions]
        width = max(map(len, rows))
        pad = tok.pad_token_id if tok.pad_token_id is not None else start
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        device = next(self.model.parameters()).device
        # left padding: positions count from each row's first real token
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device)
        ).logits[:, -1].float().cpu()
        out: dict[int, list[str]] = {}
        for row, i in enumerate(positions):
            allowed = self.words_after_space if i else self.words_at_start
            core = words[i].strip(string.punctuation)
            scores = logits[row].masked_fill(~allowed, float("-inf"))
            picked: list[str] = []  # recased, so " code" and "Code" are one candidate
            for t in scores.topk(min(4 * self.k, int(allowed.sum()))).indices.tolist():  # spares for dupes
                word = _recase(words[i], core, tok.decode([t]).strip()) if core else ""
                if word and word.strip(string.punctuation).lower() != core.lower() and word not in picked:
                    picked.append(word)
                if len(picked) == self.k:
                    break
            out[i] = picked
        return out


#: per tokenizer object: (whole words after a space, whole words at a text's start)
_WORD_TOKENS: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _word_tokens(tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks over the vocabulary: whole words after a space, and whole words at the start of a
    text. Decoded once per tokenizer object (tens of thousands of entries: about a second)."""
    key = id(tokenizer)
    if key not in _WORD_TOKENS:
        size = len(tokenizer)
        after = torch.zeros(size, dtype=torch.bool)
        start = torch.zeros(size, dtype=torch.bool)
        special = set(tokenizer.all_special_ids)
        for t in range(size):
            if t in special:
                continue
            text = tokenizer.decode([t])
            word = text.strip()
            if len(word) >= 2 and word.isalpha() and word.isascii():
                if text.startswith(" ") and text[1:] == word:
                    after[t] = True
                elif text == word:
                    start[t] = True
        _WORD_TOKENS[key] = (after, start | after)
    return _WORD_TOKENS[key]


def lm_proposer(model: str, k: int) -> LMProposer:
    """The in-process language model `model` (an `LLMConfig.model`: "smollm2-embedded", a local
    folder or a cached hub id; nothing is downloaded) as a proposer, sharing the instance the
    agent's reasoner loads for the same model."""
    from retlink.agent.backends import shared_llm
    from retlink.core.schema import LLMConfig

    llm = shared_llm(LLMConfig(model=model))
    return LMProposer(llm.model, llm.tokenizer, k)


def proposer(source: str, *, encoder: Any, k: int, lm: str) -> Proposer:
    """The proposer a text attack's `candidates` names."""
    if source == "lm":
        return lm_proposer(lm, k)
    if source == "embedding_neighbours":
        return neighbour_proposer(encoder, k)
    raise ValueError(f"candidates {source!r}: choose {' or '.join(CANDIDATE_SOURCES)}")
