"""In-process causal LM via transformers (the embedded default: SmolLM2-135M-Instruct).

`choose` constrains the answer by likelihood: after the free chain of thought, every option is
scored as the continuation of "Answer: " and the best one wins, so the answer is always one of
the options, and the softmax over option scores is an honest confidence.

Every call goes through a micro-batcher (`batcher.py`): calls from concurrent links that arrive
within a few milliseconds run together. Each prompt is prefilled alone (arithmetic-bound on a
CPU: padding would only add work), and their KV states are joined into one left-padded batch
(attention mask, explicit positions) for the greedy decode and the option scoring, where one
forward pass per token serves every row. The decode loop is written here rather
than taken from `generate` so that a row in a batch computes what it computes alone: the
repetition penalty sees only the row's own tokens (never the padding), each row stops at its
own length, end-of-sequence token or stop string, and option scoring continues from the KV state
the chain of thought left (the part of the prefix it already covers is not computed again).

A prefix cache (`prefix_cache`, on by default) keeps the KV state of each call's system message:
its chat-template text is the same in every reasoner call (the task and the answer format, with
`reasoner.prompt.instructions: system`), so it is prefilled once per model and text and each call
prefills only the rest of its prompt, from a copy of that state. Its tokens are reported as
`cached_tokens` (still counted in `prompt_tokens`, as OpenAI-compatible servers count them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from retlink.tools.llm.base import Choice, Generation, Message, TokenUsage, split_think
from retlink.tools.llm.batcher import MicroBatcher
from retlink.tools.llm.smollm2 import EMBEDDED_NAME, ensure_float_copy
from retlink.tools.lru import LRU

log = logging.getLogger(__name__)

ANSWER_PREFIX = "Answer:"
#: small models loop on a phrase without it; 1.2 keeps greedy text readable
REPETITION_PENALTY = 1.2
#: the enhancer wants one sentence: stop there instead of paying for tokens to be cut off
SENTENCE_END = (". ", ".\n")
#: how long the batcher waits for more calls after the first (a call costs ~1 s: 5 ms is noise)
BATCH_WINDOW_S = 0.005
#: rows per batch (their KV states are joined into one padded cache for the decode)
MAX_BATCH_ROWS = 8
#: distinct prefixes whose KV state is kept (the reasoner's and the enhancer's system messages)
MAX_PREFIXES = 8


def quantized(model: torch.nn.Module, kind: str, device: str) -> torch.nn.Module:
    """`model` with its linear layers' weights stored as int8 (`llm.quantize: int8`): torch's
    dynamic quantization, activations quantized per call with one scale for the whole input
    (hence one row a batch, see `TransformersLLM`). CPU only (its kernels are fbgemm's and
    oneDNN's). torch marks these modules deprecated in favour of torchao; they are what the
    pinned torch ships, so the warnings are silenced here and the choice is named in the log."""
    import warnings

    if kind != "int8":
        raise ValueError(f"unknown quantization {kind!r} (known: int8)")
    if device != "cpu":
        raise ValueError(f"llm.quantize: int8 runs on the CPU only, not on {device!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    log.info("in-process LLM: linear weights quantized to int8 (dynamic activation quantization)")
    return out


@dataclass
class Row:
    """One prompt to continue greedily; with `options`, to score them after the chain of thought."""

    ids: list[int]
    max_new: int
    stops: tuple[str, ...] = ()
    options: list[str] | None = None
    #: how many leading tokens of `ids` are a prefix whose KV state is cached (0: none)
    prefix: int = 0


@dataclass
class RowResult:
    new_ids: list[int]
    text: str
    scores: list[float] | None = None
    reasoning: str = ""
    usage: TokenUsage = field(default_factory=lambda: TokenUsage(prompt_tokens=0))


@dataclass
class OptionTree:
    """A row's options as one token sequence: the suffix ("Answer:", after any reasoning not yet
    in the cache), then every option, each option's tokens attending to the suffix and to their
    own option's earlier tokens only (never another option's), each option's positions starting
    where the suffix ends. Scored this way the suffix runs once and the row's KV cache is never
    copied per option, yet every option scores what it scores alone."""

    ids: list[int]
    #: each token's position, counted from the tree's first token
    positions: list[int]
    #: the tree token each token follows (-1: the first; it follows what came before the tree)
    parent: list[int]
    #: per option: (the tree token whose logits predict this option token, the option token)
    reads: list[list[tuple[int, int]]]

    @classmethod
    def build(cls, suffix: list[int], options: list[list[int]]) -> OptionTree:
        if not suffix:
            raise ValueError("an option tree needs at least one suffix token: its logits score the options")
        if not all(options):
            raise ValueError("every option needs at least one token (an empty one would score 0, a certainty)")
        ids, positions, parent, reads = list(suffix), list(range(len(suffix))), list(range(-1, len(suffix) - 1)), []
        for o in options:
            first = len(ids)
            ids += o
            positions += range(len(suffix), len(suffix) + len(o))
            parent += [len(suffix) - 1, *range(first, first + len(o) - 1)]
            reads.append([(first + k - 1 if k else len(suffix) - 1, tok) for k, tok in enumerate(o)])
        return cls(ids, positions, parent, reads)

    def mask(self, width: int) -> torch.Tensor:
        """(width, width) booleans: query token q sees key token k. A token sees itself and its
        ancestors; a padding query (q >= len(ids)) sees only itself, so no row is all masked."""
        seen = torch.eye(width, dtype=torch.bool)
        for q in range(len(self.ids)):
            a = self.parent[q]
            while a >= 0:
                seen[q, a] = True
                a = self.parent[a]
        return seen

    def scores(self, logp: torch.Tensor) -> list[float]:
        """Each option's summed log-probability, from (tree length, vocabulary) log-probabilities."""
        at = torch.tensor([a for read in self.reads for a, _ in read], device=logp.device)
        tok = torch.tensor([t for read in self.reads for _, t in read], device=logp.device)
        picked = logp[at, tok].tolist()
        out, k = [], 0
        for read in self.reads:
            out.append(float(sum(picked[k : k + len(read)])))
            k += len(read)
        return out


#: attention implementations that take a custom 4D float mask as given (OptionTree's scoring
#: pass builds its own); flash attention takes no such mask, flex attention wants a block mask
TREE_MASK_ATTENTION = ("sdpa", "eager")


def check_full_attention(config: Any) -> None:
    """Refuse a model whose scoring pass would get a wrong mask. Option scoring hands the model a
    full 4D mask (`_tree_pass`), which bypasses the model's own mask building: a layer that
    attends over a sliding window or in chunks would see the whole sequence, and an attention
    implementation that ignores a custom mask would let options see each other. Both would
    score without an error, so they are refused at load instead."""
    name = getattr(config, "model_type", "this model")
    impl = getattr(config, "_attn_implementation", None)
    if impl not in TREE_MASK_ATTENTION:
        raise ValueError(
            f"in-process option scoring needs attention that takes a custom 4D mask ({', '.join(TREE_MASK_ATTENTION)}); "
            f"{name} loaded with {impl!r}: load it with sdpa or eager, or serve it (reasoner.llm.backend: openai)"
        )
    layer_types = getattr(config, "layer_types", None)
    windowed = (
        any(t != "full_attention" for t in layer_types)
        if layer_types
        else getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    )
    if windowed or getattr(config, "attention_chunk_size", None):
        raise ValueError(
            f"in-process option scoring supports full-attention models only; {name} has sliding-window or chunked "
            "attention layers, whose masks the scoring pass would replace: serve it (reasoner.llm.backend: openai)"
        )


class TransformersLLM:
    """A chat model run in this process. One worker thread owns the model; concurrent calls are
    batched (see the module docstring), not queued behind a lock."""

    def __init__(
        self,
        model: str = EMBEDDED_NAME,
        device: str = "cpu",
        threads: int | None = None,
        *,
        batch_window_s: float = BATCH_WINDOW_S,
        max_batch_rows: int = MAX_BATCH_ROWS,
        prefix_cache: bool = True,
        quantize: str | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.threads = threads
        source: str | Path = ensure_float_copy() if model == EMBEDDED_NAME else model
        self.name = model
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(device).eval()
        check_full_attention(self.model.config)
        self.quantize = quantize
        if quantize is not None:
            self.model = quantized(self.model, quantize, device)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        self.prefix_cache = prefix_cache
        #: token ids of a system message's template text -> its KV state per layer (keys, values);
        #: only the batcher's worker thread touches it
        self._prefixes: LRU = LRU(MAX_PREFIXES)
        #: how many prefixes were prefilled (each once per model and text), for tests and benchmarks
        self.prefix_prefills = 0
        #: system message text -> its chat-template tokens alone (`_system_ids`); concurrent
        #: callers may compute one twice, never wrongly
        self._system_tokens: LRU = LRU(MAX_PREFIXES)
        self.batcher: MicroBatcher[Row, RowResult] = MicroBatcher(
            self._run_rows, window_s=batch_window_s, max_rows=max_batch_rows, name=f"batcher-{model}"
        )

    def _use_threads(self) -> None:
        """Apply the configured intra-op thread count in the calling thread (the batcher's
        worker): OpenMP's thread count is per thread, not per process."""
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _prompt_ids(self, messages: list[Message]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _row(self, messages: list[Message], max_new: int, stops: tuple[str, ...] = (), options: list[str] | None = None) -> Row:
        """A row for `messages`, with its cacheable prefix (the template text of the leading
        system message) when the prefix cache is on."""
        ids = self._prompt_ids(messages)
        return Row(ids, max_new, stops, options, self._prefix_len(messages, ids) if self.prefix_cache else 0)

    def _prefix_len(self, messages: list[Message], ids: list[int]) -> int:
        """How many leading tokens of `ids` are the chat-template text of the system message: 0
        when there is none, or when its tokens are not exactly a prefix of the prompt's (a
        template that renders the system message differently alone, or a token that spans the
        boundary), so a cached state is only ever used for the very tokens it was computed on."""
        if not messages or messages[0].get("role") != "system" or len(messages) < 2:
            return 0
        prefix = self._system_ids(messages[0].get("content") or "")
        return len(prefix) if 0 < len(prefix) < len(ids) and ids[: len(prefix)] == prefix else 0

    def _system_ids(self, content: str) -> list[int]:
        """The chat-template tokens of a system message alone, kept per text (every reasoner call
        sends the same one; rendering and tokenizing it again per call is waste). Empty for a
        template that will not render a system message alone."""
        kept = self._system_tokens.get(content)
        if kept is None:
            try:
                text = self.tokenizer.apply_chat_template(
                    [{"role": "system", "content": content}], add_generation_prompt=False, tokenize=False
                )
                kept = self.tokenizer(text, add_special_tokens=False).input_ids
            except Exception:  # a template that wants a user turn: no prefix to cache
                kept = []
            self._system_tokens.put(content, kept)
        return kept

    # -- the public calls: rows in, results out --------------------------------------------------

    def generate(self, messages: list[Message], *, max_tokens: int, stop_at_sentence: bool = False) -> Generation:
        return self.generate_batch([messages], max_tokens=max_tokens, stop_at_sentence=stop_at_sentence)[0]

    def generate_batch(
        self, batch: list[list[Message]], *, max_tokens: int, stop_at_sentence: bool = False
    ) -> list[Generation]:
        """Several prompts as one request (the enhancer's candidates), batched with other calls."""
        stops = SENTENCE_END if stop_at_sentence else ()
        rows = [self._row(m, max_tokens, stops) for m in batch]
        out = []
        for r in self.batcher.submit(rows):
            reasoning, answer = split_think(r.text)
            out.append(Generation(text=answer, reasoning=reasoning, usage=r.usage))
        return out

    def choose(self, messages: list[Message], options: list[str], *, max_reasoning_tokens: int) -> Choice:
        if not options:
            return Choice(option=None, raw="no options")
        [r] = self.batcher.submit([self._row(messages, max_reasoning_tokens, (ANSWER_PREFIX,), list(options))])
        probs = torch.softmax(torch.tensor(r.scores), 0)
        best = int(probs.argmax())
        return Choice(
            option=options[best],
            confidence=float(probs[best]),
            probabilities={o: round(float(p), 4) for o, p in zip(options, probs, strict=True)},
            reasoning=r.reasoning,
            raw=r.text,
            usage=[r.usage],
        )

    # -- the batch: prefill, greedy decode, option scoring ---------------------------------------

    @torch.inference_mode()
    def _run_rows(self, rows: list[Row]) -> list[RowResult]:
        self._use_threads()
        if self.quantize is not None and len(rows) > 1:
            # a dynamically quantized layer scales its input once over every row in it, so a row
            # batched with others would not compute what it computes alone: one row at a time
            return [result for row in rows for result in self._run_together([row])]
        if len(rows) > 1 and not any(r.max_new for r in rows):
            # nothing to decode (no chain of thought): batching would only join the prefilled
            # KV states into one padded cache to score the options, work a row alone does not do
            # (bench/link_latency.py: batching such links was 0.81x of one prompt a batch)
            return [result for row in rows for result in self._run_together([row])]
        return self._run_together(rows)

    def _run_together(self, rows: list[Row]) -> list[RowResult]:
        cache, mask, logits, width = self._prefill(rows)
        new, fed, mask = self._decode(rows, mask, cache, logits)
        results = [
            RowResult(
                new_ids=new[i],
                text=self.tokenizer.decode(new[i], skip_special_tokens=True),
                usage=TokenUsage(prompt_tokens=len(r.ids), generated_tokens=len(new[i]), cached_tokens=r.prefix),
            )
            for i, r in enumerate(rows)
        ]
        scoring = [i for i, r in enumerate(rows) if r.options]
        if scoring:
            self._score(rows, results, scoring, new, fed, mask, width, cache)
        return results

    def _prefill(self, rows: list[Row]):
        """Each prompt prefilled alone (on a CPU prefill is bound by arithmetic: padding short
        prompts to the longest would only add work), then their KV states joined into one
        left-padded batch cache for the decode, where batching pays. Returns (cache, attention
        mask over it, last-token logits per row, padded width)."""
        caches, logits = [], []
        for r in rows:
            past = self._prefix_state(r.ids[: r.prefix]) if r.prefix else None
            out = self.model(
                input_ids=torch.tensor([r.ids[r.prefix :]], device=self.device), cache=past, use_cache=True, logits_to_keep=1
            )
            caches.append(out.cache)
            logits.append(out.logits[:, -1, :].float())
        width = max(len(r.ids) for r in rows)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            mask[i, width - len(r.ids) :] = 1
        if len(rows) == 1:
            return caches[0], mask, logits[0], width
        from transformers import DynamicCache

        layers = []
        for layer in range(len(caches[0].layers)):
            keys = [c.layers[layer].keys for c in caches]
            values = [c.layers[layer].values for c in caches]
            layers.append((self._left_pad(keys, width), self._left_pad(values, width)))
        return DynamicCache(ddp_cache_data=layers, config=self.model.config), mask, torch.cat(logits), width

    def _prefix_state(self, ids: list[int]):
        """A fresh cache holding the KV state of `ids` (a system message's template tokens):
        prefilled the first time, then copied from the kept state (the copy is extended by the
        call; the kept one never changes)."""
        from transformers import DynamicCache

        key = tuple(ids)
        kept = self._prefixes.get(key)
        if kept is None:
            out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True, logits_to_keep=1)
            kept = [(layer.keys.clone(), layer.values.clone()) for layer in out.cache.layers]
            self._prefixes.put(key, kept)
            self.prefix_prefills += 1
        return DynamicCache(ddp_cache_data=[(k.clone(), v.clone()) for k, v in kept], config=self.model.config)

    @staticmethod
    def _left_pad(states: list[torch.Tensor], width: int) -> torch.Tensor:
        """(1, heads, length_i, dim) tensors as one (n, heads, width, dim), zeros on the left
        (masked out, never attended)."""
        first = states[0]
        out = first.new_zeros((len(states), first.shape[1], width, first.shape[3]))
        for i, t in enumerate(states):
            out[i, :, width - t.shape[2] :] = t[0]
        return out

    def _decode(self, rows: list[Row], mask: torch.Tensor, cache, logits: torch.Tensor):
        """Greedy decode of every row at once. Returns (new tokens per row, how many of them are
        in the KV cache per row, the attention mask over the cache). A row that stops still gets
        a column per later step, masked out."""
        n = len(rows)
        new: list[list[int]] = [[] for _ in rows]
        fed = [0] * n
        active = torch.tensor([r.max_new > 0 for r in rows])
        seen = torch.zeros((n, logits.shape[-1]), dtype=torch.bool, device=logits.device)
        for i, r in enumerate(rows):  # the repetition penalty counts the row's own prompt
            seen[i, torch.tensor(r.ids, device=logits.device)] = True
        position = mask.sum(1)
        arange = torch.arange(n, device=logits.device)
        while bool(active.any()):
            logits = torch.where(seen, torch.where(logits > 0, logits / REPETITION_PENALTY, logits * REPETITION_PENALTY), logits)
            nxt = logits.argmax(-1)
            was_active = active.clone()
            for i in torch.nonzero(active).flatten().tolist():
                tok = int(nxt[i])
                new[i].append(tok)
                if tok in self.eos_ids or len(new[i]) >= rows[i].max_new or self._stopped(new[i], rows[i].stops):
                    active[i] = False
            if not bool(active.any()):
                break
            seen[arange, nxt] |= was_active.to(seen.device)
            step_mask = active.long().to(mask.device)
            mask = torch.cat([mask, step_mask[:, None]], 1)
            out = self.model(
                input_ids=nxt[:, None], attention_mask=mask, position_ids=position[:, None], cache=cache, use_cache=True
            )
            position = position + step_mask
            for i in torch.nonzero(active).flatten().tolist():
                fed[i] += 1
            logits = out.logits[:, -1, :].float()
        return new, fed, mask

    def _stopped(self, new: list[int], stops: tuple[str, ...]) -> bool:
        if not stops:
            return False
        text = self.tokenizer.decode(new[-8:], skip_special_tokens=True)  # a stop string spans few tokens
        return any(s in text for s in stops)

    def _suffix(self, thought: str) -> tuple[str, list[int]]:
        """The chain of thought cut at the answer prefix, and the tokens that follow the prompt
        before the options: the reasoning, a newline, "Answer:"."""
        reasoning, _ = split_think(thought)
        reasoning = (reasoning or thought).split(ANSWER_PREFIX)[0].strip()
        suffix = (reasoning + "\n" if reasoning else "") + ANSWER_PREFIX
        return reasoning, self.tokenizer(suffix, add_special_tokens=False).input_ids

    def _score(self, rows, results, scoring, new, fed, mask, width, cache) -> None:
        """Sum of log-probabilities of each option's tokens as the continuation of prompt +
        reasoning + "Answer:", for the rows in `scoring`: one forward pass that continues from
        the decode's KV state, a row's options as one `OptionTree` sequence.

        A quantized model scores one option a pass instead (the cache cut back after each): a
        dynamically quantized layer scales its whole input at once, so options sharing a sequence
        would change each other's scores."""
        keep = mask.clone()
        per_row, starts = [], []  # per scoring row: its one tree, or one tree per option (quantized)
        for i in scoring:
            r = rows[i]
            reasoning, suffix = self._suffix(results[i].text)
            results[i].reasoning = reasoning
            common = 0  # generated tokens already in the cache that the suffix starts with
            limit = min(fed[i], len(suffix) - 1)  # at least one suffix token runs: its logits score the options
            while common < limit and new[i][common] == suffix[common]:
                common += 1
            keep[i, width + common :] = 0
            cont, options = suffix[common:], self._option_ids(r.options)
            trees = [OptionTree.build(cont, options)] if self.quantize is None else [OptionTree.build(cont, [o]) for o in options]
            per_row.append(trees)
            starts.append(len(r.ids) + common)
            results[i].usage.scored_tokens = sum(len(t.ids) for t in trees)
        if len(scoring) < len(rows):  # rows that only generate take no part in scoring
            cache.batch_select_indices(torch.tensor(scoring, device=keep.device))
        keep = keep[scoring].bool().cpu()
        if self.quantize is None:
            trees = [tree for [tree] in per_row]
            for i, tree, logp in zip(scoring, trees, self._tree_pass(trees, starts, keep, cache), strict=True):
                results[i].scores = tree.scores(logp)
            return
        for k, i in enumerate(scoring):  # quantized rows run one a batch: k is 0
            results[i].scores = []
            for tree in per_row[k]:
                [logp] = self._tree_pass([tree], starts[k : k + 1], keep[k : k + 1], cache)
                results[i].scores += tree.scores(logp)
                cache.crop(-len(tree.ids))

    def _tree_pass(self, trees: list[OptionTree], starts: list[int], keep: torch.Tensor, cache) -> list[torch.Tensor]:
        """One forward pass of each row's tree over that row's cache (`keep`: which cache
        columns the row may see); per row, (tree length, vocabulary) log-probabilities."""
        pad = self.tokenizer.pad_token_id
        past = keep.shape[1]
        longest = max(len(t.ids) for t in trees)
        ids = torch.full((len(trees), longest), pad, dtype=torch.long)
        positions = torch.zeros((len(trees), longest), dtype=torch.long)
        seen = torch.zeros((len(trees), 1, longest, past + longest), dtype=torch.bool)
        for k, tree in enumerate(trees):
            ids[k, : len(tree.ids)] = torch.tensor(tree.ids)
            positions[k, : len(tree.ids)] = torch.tensor(tree.positions) + starts[k]
            seen[k, 0, : len(tree.ids), :past] = keep[k]
            seen[k, 0, :, past:] = tree.mask(longest)
        # additive, not boolean: eager attention (a model without SDPA) adds the mask to the scores
        bias = torch.zeros(seen.shape, dtype=self.model.dtype).masked_fill(~seen, torch.finfo(self.model.dtype).min)
        logits = self.model(
            input_ids=ids.to(self.device), attention_mask=bias.to(self.device), position_ids=positions.to(self.device), cache=cache
        ).logits
        return list(torch.log_softmax(logits.float(), -1))

    def _option_ids(self, options: list[str]) -> list[list[int]]:
        return [self.tokenizer(" " + o, add_special_tokens=False).input_ids for o in options]
