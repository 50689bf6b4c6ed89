"""LLM paraphrases of a sample's context: the text side of one-to-many augmentation (MAT) and an
LLM-made text perturbation (text-centric adversarial prompting rewrites captions with an LLM).

`kind: paraphrase` in an eval setting's `text:` block. The language model is any `LLMConfig`
(the embedded in-process SmolLM2 by default, a served model through `backend: openai`). The
instruction is picked by the per-sample seed from a few phrasings, so different seeds give
different rewrites of the same sentence; decoding is greedy, so a seed always gives the same one.

A paraphrase costs an LLM call, so each is stored on disk under `$RETLINK_CACHE/paraphrases/`,
keyed by the model and the exact prompt: a resumed run, every pipeline of a run and a later run
all reuse it. A reply that is empty after cleaning keeps the original text (logged): the
perturbation must never silently turn a sentence into nothing.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

from retlink.core.paths import cache_dir
from retlink.core.schema import LLMConfig
from retlink.tools.atomic import entry_path, read_json_entry, write_json_atomic

log = logging.getLogger(__name__)

#: the eval runner rewrites in its link threads: the first calls for a model must not load it
#: twice at once (transformers' loading swaps process-wide state, see
#: `agent.backends.build_components`: two loads at once fail with "Cannot copy out of meta tensor")
_LOADING = threading.Lock()


def loaded_llm(cfg: LLMConfig) -> Any:
    """The shared model of `cfg`, loaded by one thread at a time."""
    from retlink.agent.backends import shared_llm

    with _LOADING:
        return shared_llm(cfg)

#: the instruction phrasings a seed picks from (one-to-many: several rewrites of one sentence)
INSTRUCTIONS = (
    "Rewrite the following sentence in other words. Keep its meaning and every name in it. "
    "Answer with the rewritten sentence only.",
    "Paraphrase this sentence, keeping all names and facts. Reply with one sentence only.",
    "Say the same thing differently in one sentence, keeping the names. Reply with the sentence only.",
)
#: a paraphrase longer than this many times the original (plus slack) is cut back to its first sentence
MAX_GROWTH = 3
_PREFIX = re.compile(r"^(?:rewritten sentence|paraphrase|sentence|answer)\s*:\s*", re.IGNORECASE)


def messages_for(text: str, seed: int) -> list[dict[str, str]]:
    """The chat messages that ask for a paraphrase of `text` (the seed picks the phrasing)."""
    return [
        {"role": "system", "content": INSTRUCTIONS[seed % len(INSTRUCTIONS)]},
        {"role": "user", "content": text},
    ]


def clean_reply(reply: str, original: str) -> str:
    """The paraphrase in a model's reply: first non-empty line, without a label or quotes, cut
    to its first sentence when it grew far past the original; the original when nothing is left."""
    lines = [ln.strip() for ln in reply.splitlines() if ln.strip()]
    text = _PREFIX.sub("", lines[0]).strip().strip("\"'“”").strip() if lines else ""
    if len(text) > MAX_GROWTH * len(original) + 20:
        text = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return text or original


def cache_path(cfg: LLMConfig, messages: list[dict[str, str]], max_tokens: int, folder: str = "paraphrases") -> Path:
    """Where the reply of `cfg` to `messages` is stored, under `$RETLINK_CACHE/<folder>/`: keyed
    by the model and the exact prompt (also the LLM-instructed perturbations' store)."""
    key = json.dumps(
        {"backend": cfg.backend, "model": cfg.model, "messages": messages, "max_tokens": max_tokens},
        sort_keys=True,
    )
    return entry_path(cache_dir() / folder, key)


def paraphrase(text: str, *, seed: int, llm: LLMConfig | None = None, max_tokens: int = 64) -> str:
    """A paraphrase of `text` by the language model `llm` (stored, so asked once per prompt)."""
    if not text.strip():
        return text
    cfg = llm or LLMConfig()
    messages = messages_for(text, seed)
    path = cache_path(cfg, messages, max_tokens)
    entry = read_json_entry(path)
    if isinstance(entry, dict) and isinstance(entry.get("paraphrase"), str):
        return entry["paraphrase"]
    reply = loaded_llm(cfg).generate(messages, max_tokens=max_tokens).text
    out = clean_reply(reply, text)
    if out == text:
        log.info("paraphrase kept the original text (empty or unusable reply: %r)", reply[:80])
    try:
        write_json_atomic(path, {"text": text, "paraphrase": out, "model": cfg.model, "reply": reply})
    except OSError as e:  # a cache that cannot be written costs a repeat, never the run
        log.warning("paraphrase not stored (%s): %s", path, e)
    return out
