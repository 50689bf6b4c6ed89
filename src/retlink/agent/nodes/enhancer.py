"""enhance: condense the evidence about each top candidate into one better description.

Evidence is assigned to a candidate by embedding similarity between the passage and the
candidate's KB text (a page about another entity is not used to describe this one). Results
are cached by (model, entity, evidence), so repeated links and evaluations reuse them. With
`enhancer.kb_only`, a top candidate that no passage is about is described from its KB entry
alone; that text depends on the KB only, so it is kept on disk (`tools/kb/descriptions.py`) and
generated once per entity, model and prompt, not once per link. With `enhancer.condense:
extract` no LLM is asked: the description is the evidence sentence closest to the candidate's KB
text, which costs one small embedding call instead of a generation per candidate.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import numpy as np

from retlink.agent.prompts import enhancer_messages, kb_enhancer_messages
from retlink.core.errors import BackendError
from retlink.core.schema import EnhancerConfig
from retlink.core.types import Candidate, Evidence
from retlink.tools.kb.descriptions import DescriptionStore, description_key
from retlink.tools.kb.embedders import TextEmbedder
from retlink.tools.llm.base import LLM, llm_calls
from retlink.tools.lru import LRU

log = logging.getLogger(__name__)

#: a passage must be at least this similar to the candidate's KB text to describe it
MIN_EVIDENCE_SIMILARITY = 0.45
MAX_PASSAGES = 2
#: shorter evidence sentences (headings, captions, "Read more.") describe nothing
MIN_SENTENCE_CHARS = 24
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def assign_evidence(
    candidates: list[Candidate], evidence: list[Evidence], embedder: TextEmbedder
) -> dict[str, list[Evidence]]:
    """For each candidate, the most similar passages above the threshold."""
    if not candidates or not evidence:
        return {}
    unique = list({e.url + e.text[:64]: e for e in evidence}.values())
    ev = embedder.embed([f"{e.title}. {e.text}" for e in unique])
    cv = embedder.embed([c.entity.text() for c in candidates])
    sims = cv @ ev.T
    out: dict[str, list[Evidence]] = {}
    for i, c in enumerate(candidates):
        order = np.argsort(-sims[i])[:MAX_PASSAGES]
        chosen = [unique[j] for j in order if sims[i, j] >= MIN_EVIDENCE_SIMILARITY]
        if chosen:
            out[c.entity.id] = chosen
    return out


def _key(producer: str, candidate: Candidate, evidence: list[Evidence]) -> str:
    """A description's cache key: who wrote it (a model, or `extract|<embedder>`), about whom,
    from which passages."""
    h = hashlib.sha256("\x00".join(e.text for e in evidence).encode()).hexdigest()[:16]
    return f"{producer}|{candidate.entity.id}|{h}"


def evidence_sentences(evidence: list[Evidence]) -> list[str]:
    """The passages' sentences, whitespace-normalised, without repeats or fragments."""
    seen: dict[str, None] = {}
    for e in evidence:
        for sentence in _SENTENCE_END.split(" ".join(e.text.split())):
            if len(sentence) >= MIN_SENTENCE_CHARS:
                seen.setdefault(sentence, None)
    return list(seen)


def extract_description(candidate: Candidate, evidence: list[Evidence], embedder: TextEmbedder) -> str | None:
    """The evidence sentence most similar to the candidate's KB text (cut like a generated one);
    None when the passages hold no full sentence."""
    sentences = evidence_sentences(evidence)
    if not sentences:
        return None
    vectors = embedder.embed([candidate.entity.text(), *sentences])
    best = int(np.argmax(vectors[1:] @ vectors[0]))
    return _clean_sentence(sentences[best])


def _clean_sentence(text: str, max_chars: int = 300) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    text = text[: end + 1] if end != -1 else text
    return text[:max_chars]


def enhance(
    state: dict[str, Any],
    *,
    llm: LLM | None,
    embedder: TextEmbedder,
    cfg: EnhancerConfig,
    cache: LRU,
    store: DescriptionStore | None = None,
) -> dict[str, Any]:
    """Describe the top candidates: from their matching evidence (cached in memory by entity and
    evidence) or, with `kb_only`, from their KB entry alone (cached by entity, model and prompt in
    `cache` and on disk in `store`, so each is generated once, not once per link)."""
    candidates: list[Candidate] = state.get("candidates", [])
    evidence: list[Evidence] = state.get("evidence", [])
    if not cfg.enabled or cfg.top_n == 0 or (llm is None and cfg.condense == "llm"):
        return {"_skipped": "enhancer disabled"}
    if not evidence and not cfg.kb_only:
        return {"_skipped": "no evidence"}
    top = candidates[: cfg.top_n]
    assigned = assign_evidence(top, evidence, embedder)
    if cfg.condense == "extract":
        return _extracted(candidates, top, assigned, embedder, cache)
    todo, texts, calls, kb_only = [], {}, [], []
    for c in top:
        ev = assigned.get(c.entity.id)
        if ev:
            messages, key = enhancer_messages(c, ev), _key(llm.name, c, ev)
        elif cfg.kb_only:
            messages = kb_enhancer_messages(c)
            key = description_key(llm.name, c.entity.id, messages, cfg.max_new_tokens)
            kb_only.append(c.entity.id)
        else:
            continue
        cached = cache.get(key)
        if cached is None and not ev and store is not None:
            cached = store.get(key)
            if cached is not None:
                cache.put(key, cached)
        if cached is not None:
            texts[c.entity.id] = cached
        else:
            todo.append((c, ev, messages, key))
    try:
        if todo:
            batch = [m for _, _, m, _ in todo]
            if hasattr(llm, "generate_batch"):
                gens = llm.generate_batch(batch, max_tokens=cfg.max_new_tokens, stop_at_sentence=True)
            else:
                gens = [llm.generate(m, max_tokens=cfg.max_new_tokens) for m in batch]
            calls = llm_calls(gens)
            for (c, ev, _, key), g in zip(todo, gens, strict=True):
                sentence = _clean_sentence(g.text)
                if sentence:
                    cache.put(key, sentence)
                    if not ev and store is not None:
                        store.put(key, sentence)
                    texts[c.entity.id] = sentence
    except BackendError as e:
        log.warning("enhancer failed: %s", e)
        return {"_skipped": f"enhancer failed: {e}"}
    detail = {"kb_only": sorted(set(kb_only) & set(texts)), "generated": len(todo), "cached": len(texts) - len(todo)}
    return _described(candidates, texts, detail, calls)


def _extracted(
    candidates: list[Candidate],
    top: list[Candidate],
    assigned: dict[str, list[Evidence]],
    embedder: TextEmbedder,
    cache: LRU,
) -> dict[str, Any]:
    """`condense: extract`: each top candidate with matching evidence is described by the passage
    sentence closest to its KB text (cached like generated ones, under the embedder's name)."""
    texts: dict[str, str] = {}
    extracted = 0
    for c in top:
        ev = assigned.get(c.entity.id)
        if not ev:
            continue
        key = _key(f"extract|{embedder.name}", c, ev)
        sentence = cache.get(key)
        if sentence is None:
            sentence = extract_description(c, ev, embedder)
            extracted += 1
            if sentence:
                cache.put(key, sentence)
        if sentence:
            texts[c.entity.id] = sentence
    return _described(candidates, texts, {"condensed_by": "extract", "extracted": extracted, "cached": len(texts) - extracted}, [])


def _described(candidates: list[Candidate], texts: dict[str, str], detail: dict[str, Any], calls: list) -> dict[str, Any]:
    """The node's update: the candidates with their new descriptions and what was done (`detail`,
    the LLM calls), or why nothing changed when no candidate got one (the calls still reported)."""
    if not texts:
        return {"_skipped": "no evidence matched the candidates", **({"_detail": {"llm_calls": calls}} if calls else {})}
    updated = [c.model_copy(update={"enhanced_description": texts.get(c.entity.id)}) for c in candidates]
    return {"candidates": updated, "_detail": {"enhanced": sorted(texts), **detail, "llm_calls": calls}}
