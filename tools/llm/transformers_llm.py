"""In-process causal LM via transformers (the embedded default: SmolLM2-135M-Instruct).

`choose` constrains the answer by likelihood: after the free chain of thought, every option is
scored as the continuation of "Answer: " and the best one wins, so the answer is always one of
the options, and the softmax over option scores is an honest confidence.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from retlink.tools.llm.base import Choice, Generation, Message, TokenUsage, split_think
from retlink.tools.llm.smollm2 import EMBEDDED_NAME, ensure_float_copy

log = logging.getLogger(__name__)

ANSWER_PREFIX = "Answer:"
#: small models loop on a phrase without it; 1.2 keeps greedy text readable
REPETITION_PENALTY = 1.2
#: the enhancer wants one sentence: stop there instead of paying for tokens to be cut off
SENTENCE_END = [". ", ".\n"]


class TransformersLLM:
    """A chat model run in this process. Calls are serialised by a lock (one model, 2 cores)."""

    def __init__(self, model: str = EMBEDDED_NAME, device: str = "cpu", threads: int | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.threads = threads
        source: str | Path = ensure_float_copy() if model == EMBEDDED_NAME else model
        self.name = model
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._lock = threading.Lock()

    def _use_threads(self) -> None:
        """Apply the configured intra-op thread count in the calling thread: graph nodes run in
        executor threads, and OpenMP's thread count is per thread, not per process."""
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _prompt_ids(self, messages: list[Message]) -> torch.Tensor:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)

    @torch.inference_mode()
    def _greedy(self, ids: torch.Tensor, max_tokens: int, stop: list[str] | None = None):
        """Greedy continuation: (text, full token sequence, KV cache of that sequence)."""
        if max_tokens <= 0:
            return "", ids, None
        out = self.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=stop,
            tokenizer=self.tokenizer if stop else None,
            repetition_penalty=REPETITION_PENALTY,
            return_dict_in_generate=True,
        )
        text = self.tokenizer.decode(out.sequences[0, ids.shape[1] :], skip_special_tokens=True)
        return text, out.sequences, out.cache

    def generate(self, messages: list[Message], *, max_tokens: int) -> Generation:
        with self._lock:
            self._use_threads()
            ids = self._prompt_ids(messages)
            text, seq, _ = self._greedy(ids, max_tokens)
        reasoning, answer = split_think(text)
        usage = TokenUsage(prompt_tokens=ids.shape[1], generated_tokens=seq.shape[1] - ids.shape[1])
        return Generation(text=answer, reasoning=reasoning, usage=usage)

    def generate_batch(
        self, batch: list[list[Message]], *, max_tokens: int, stop_at_sentence: bool = False
    ) -> list[Generation]:
        """Several prompts in one left-padded `generate` call (the enhancer's candidates)."""
        if not batch:
            return []
        texts = [self.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in batch]
        self.tokenizer.padding_side = "left"
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        with self._lock, torch.inference_mode():
            self._use_threads()
            out = self.model.generate(
                **enc,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                repetition_penalty=REPETITION_PENALTY,
                stop_strings=SENTENCE_END if stop_at_sentence else None,
                tokenizer=self.tokenizer if stop_at_sentence else None,
            )
        new = out[:, enc.input_ids.shape[1] :]
        decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        prompt_tokens = enc.attention_mask.sum(1).tolist()
        generated = (new != self.tokenizer.pad_token_id).sum(1).tolist()
        return [
            Generation(
                text=split_think(t)[1],
                reasoning=split_think(t)[0],
                usage=TokenUsage(prompt_tokens=int(p), generated_tokens=int(g)),
            )
            for t, p, g in zip(decoded, prompt_tokens, generated, strict=True)
        ]

    @torch.inference_mode()
    def _score_options(self, prefix_ids: torch.Tensor, options: list[str], reuse=None) -> tuple[torch.Tensor, int]:
        """Sum of log-probabilities of each option's tokens as the continuation of the prefix,
        and the number of tokens run to score them (the prefix's uncached part and the options).

        `reuse` is (token sequence, KV cache) from the chain-of-thought generation: the part of
        the prefix it already covers is not computed again (the prompt is most of the prefix).
        """
        option_ids = [self.tokenizer(" " + o, add_special_tokens=False).input_ids for o in options]
        longest = max(len(o) for o in option_ids)
        n, p = len(options), prefix_ids.shape[1]
        cache, done = None, 0
        if reuse is not None and reuse[1] is not None:
            seq, cache = reuse
            limit = min(seq.shape[1], p, cache.get_seq_length()) - 1  # keep >= 1 token to run
            same = (seq[0, :limit] == prefix_ids[0, :limit]).int()
            done = int(same.cumprod(0).sum())
            cache.crop(-(cache.get_seq_length() - done))  # negative: the number of tokens to drop
        prefix_out = self.model(prefix_ids[:, done:], cache=cache, use_cache=True)
        cache = prefix_out.cache
        cache.batch_repeat_interleave(n)
        pad = self.tokenizer.pad_token_id
        tail = torch.full((n, longest), pad, dtype=torch.long, device=self.device)
        mask = torch.zeros((n, p + longest), dtype=torch.long, device=self.device)
        mask[:, :p] = 1
        for i, o in enumerate(option_ids):
            tail[i, : len(o)] = torch.tensor(o, device=self.device)
            mask[i, p : p + len(o)] = 1
        logits_tail = self.model(tail, attention_mask=mask, cache=cache).logits
        logp = torch.log_softmax(
            torch.cat([prefix_out.logits[:, -1:, :].expand(n, -1, -1), logits_tail[:, :-1]], dim=1).float(), -1
        )
        scores = torch.zeros(n)
        for i, o in enumerate(option_ids):
            idx = torch.tensor(o, device=self.device)
            scores[i] = logp[i, torch.arange(len(o)), idx].sum()
        return scores, p - done + sum(len(o) for o in option_ids)

    def choose(self, messages: list[Message], options: list[str], *, max_reasoning_tokens: int) -> Choice:
        if not options:
            return Choice(option=None, raw="no options")
        with self._lock:
            self._use_threads()
            ids = self._prompt_ids(messages)
            thought, seq, cache = self._greedy(ids, max_reasoning_tokens, stop=[ANSWER_PREFIX])
            reasoning, _ = split_think(thought)
            reasoning = (reasoning or thought).split(ANSWER_PREFIX)[0].strip()
            suffix = (reasoning + "\n" if reasoning else "") + ANSWER_PREFIX
            suffix_ids = self.tokenizer(suffix, return_tensors="pt", add_special_tokens=False).input_ids
            prefix = torch.cat([ids, suffix_ids.to(self.device)], dim=1)
            scores, scored = self._score_options(prefix, options, reuse=(seq, cache))
        usage = TokenUsage(prompt_tokens=ids.shape[1], generated_tokens=seq.shape[1] - ids.shape[1], scored_tokens=scored)
        probs = torch.softmax(scores, 0)
        best = int(probs.argmax())
        return Choice(
            option=options[best],
            confidence=float(probs[best]),
            probabilities={o: round(float(p), 4) for o, p in zip(options, probs, strict=True)},
            reasoning=reasoning,
            raw=thought,
            usage=[usage],
        )
