"""LLM backend for any OpenAI-compatible chat server (vLLM first): the served reasoner/enhancer.

`choose` works in two requests, like the in-process backend, so that any model (a reasoning
model with a reasoning parser, or a small instruct model) behaves the same:
1. free chain of thought (`max_reasoning_tokens`), read from the message's `reasoning` field
   (older servers: `reasoning_content`; models that inline `<think>` blocks: parsed out);
2. the answer, constrained by vLLM structured outputs to `{"answer": <one of the options>}`
   (a JSON schema whose enum is the options), with logprobs.
The confidence is the model's probability of the chosen option against the other options,
estimated from the answer's token logprobs (see `option_probabilities`). With structured output
off (servers without it), the answer is matched against the options in the free text.

`chat_template_kwargs` (e.g. `{"enable_thinking": false}` for Qwen3-style models) goes in the
`extra_body` of the answer step and of `generate`, never of the chain-of-thought step: a
reasoning model should think where it is asked to and answer directly where it must answer.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from retlink.tools.llm.base import Choice, Generation, Message, TokenUsage, split_think
from retlink.tools.llm.openai_client import OpenAICompatClient, message_reasoning

log = logging.getLogger(__name__)

ANSWER_INSTRUCTION = (
    'Give your final answer now, as JSON {{"answer": "<id>"}} where <id> is exactly one of: {options}.'
)
TOP_LOGPROBS = 20
#: where `stop_at_sentence` ends a generation (as the in-process backend's SENTENCE_END)
SENTENCE_END = (". ", ".\n")


def reply_usage(reply: Any) -> TokenUsage | None:
    """The server's token counts of one reply (`usage`), None when it sent none or garbage."""
    usage = getattr(reply, "usage", None)
    prompt, completion = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (prompt, completion)):
        return None
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    cached = cached if isinstance(cached, int) and not isinstance(cached, bool) and 0 <= cached <= prompt else 0
    return TokenUsage(prompt_tokens=prompt, generated_tokens=completion, cached_tokens=cached)


def answer_schema(options: list[str]) -> dict[str, Any]:
    """The JSON schema that makes the answer one of the options."""
    return {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": list(options)}},
        "required": ["answer"],
        "additionalProperties": False,
    }


class OpenAILLM:
    """Chat model behind an OpenAI-compatible server. Thread-safe; calls are bounded by a semaphore."""

    def __init__(
        self,
        client: OpenAICompatClient,
        *,
        temperature: float = 0.0,
        structured_output: bool = True,
        answer_max_tokens: int = 48,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """`client` carries the connection (model, base_url, timeouts, retries, concurrency)."""
        self.client = client
        self.name = client.model
        self.chat_template_kwargs = dict(chat_template_kwargs) if chat_template_kwargs else None
        self.temperature = temperature
        self.structured_output = structured_output
        self.answer_max_tokens = answer_max_tokens

    @classmethod
    def from_config(cls, cfg: Any) -> OpenAILLM:
        """Build from `retlink.core.schema.LLMConfig` (backend "openai")."""
        return cls(
            OpenAICompatClient.from_config(cfg),
            temperature=cfg.temperature,
            structured_output=cfg.structured_output,
            chat_template_kwargs=cfg.chat_template_kwargs,
        )

    def _answer_body(self, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The `extra_body` of a request that wants an answer: `extra` plus the template kwargs."""
        body = dict(extra or {})
        if self.chat_template_kwargs:
            body["chat_template_kwargs"] = self.chat_template_kwargs
        return body or None

    def _complete(self, messages: list[Message], **params: Any) -> Any:
        self.client.check()
        return self.client.chat(messages, temperature=self.temperature, **params)

    def generate(
        self, messages: list[Message], *, max_tokens: int, stop_at_sentence: bool = False
    ) -> Generation:
        """Free text; `stop_at_sentence` ends it at the first full stop (the stop is kept)."""
        params: dict[str, Any] = {"max_tokens": max_tokens}
        extra: dict[str, Any] = {}
        if stop_at_sentence:
            params["stop"] = list(SENTENCE_END)
            extra["include_stop_str_in_output"] = True  # vLLM: keep the full stop
        if body := self._answer_body(extra):
            params["extra_body"] = body
        reply = self._complete(messages, **params)
        msg = reply.choices[0].message
        reasoning = message_reasoning(msg)
        inline_reasoning, text = split_think(msg.content or "")
        return Generation(text=text, reasoning=reasoning or inline_reasoning, usage=reply_usage(reply))

    def generate_batch(
        self, batch: list[list[Message]], *, max_tokens: int, stop_at_sentence: bool = False
    ) -> list[Generation]:
        """Concurrent requests (the server batches them): one thread per request, at most the
        client's `max_concurrency`, which its semaphore also bounds across callers."""
        from concurrent.futures import ThreadPoolExecutor

        if not batch:
            return []
        with ThreadPoolExecutor(max_workers=min(len(batch), self.client.max_concurrency)) as pool:
            return list(
                pool.map(
                    lambda m: self.generate(m, max_tokens=max_tokens, stop_at_sentence=stop_at_sentence),
                    batch,
                )
            )

    def _think(self, messages: list[Message], max_tokens: int) -> tuple[str, TokenUsage | None]:
        if max_tokens <= 0:
            return "", None
        reply = self._complete(messages, max_tokens=max_tokens, stop=["Answer:"])
        msg = reply.choices[0].message
        inline_reasoning, text = split_think(msg.content or "")
        return message_reasoning(msg) or inline_reasoning or text, reply_usage(reply)

    def choose(self, messages: list[Message], options: list[str], *, max_reasoning_tokens: int) -> Choice:
        if not options:
            return Choice(option=None, raw="no options")
        reasoning, think_usage = self._think(messages, max_reasoning_tokens)
        follow_up = list(messages)
        if reasoning:
            follow_up.append({"role": "assistant", "content": reasoning})
        follow_up.append({"role": "user", "content": ANSWER_INSTRUCTION.format(options=", ".join(options))})
        longest = max(len(o) for o in options)
        params: dict[str, Any] = {
            "max_tokens": self.answer_max_tokens + longest,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        structured = (
            {"structured_outputs": {"json": answer_schema(options)}} if self.structured_output else None
        )
        if body := self._answer_body(structured):
            params["extra_body"] = body
        reply = self._complete(follow_up, **params)
        usage = [u for u in (think_usage, reply_usage(reply)) if u is not None]
        choice = reply.choices[0]
        raw = choice.message.content or ""
        option = parse_answer(raw, options)
        if option is None:
            log.warning("%s gave no valid option in %r", self.name, raw[:200])
            return Choice(option=None, reasoning=reasoning, raw=raw, usage=usage)
        probs, settled = option_probabilities(raw, option, options, choice.logprobs)
        # Greedy decoding picks token by token: "Q" may win because Q1, Q2 and Q12 share it, while
        # NIL alone is likelier than any one of them. Pick the likeliest option whose estimate is
        # exact (its tail was forced by the grammar); the greedy answer stays in `raw`.
        best = max(settled | {option}, key=lambda o: probs[o])
        return Choice(
            option=best, confidence=probs[best], probabilities=probs, reasoning=reasoning, raw=raw, usage=usage
        )


def parse_answer(raw: str, options: list[str]) -> str | None:
    """The option in `{"answer": ...}`, or, for free text, the option named in it (longest first)."""
    _, text = split_think(raw)
    try:
        value = json.loads(text).get("answer")
        if value in options:
            return value
    except (ValueError, AttributeError, RecursionError):  # not JSON, not an object, nested too deep
        pass
    for o in sorted(options, key=len, reverse=True):
        if re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text):
            return o
    return None


def _value_span(raw: str, option: str) -> tuple[int, int] | None:
    """Character span of the answer value (without quotes) in the JSON text."""
    m = re.search(r'"answer"\s*:\s*"', raw)
    if not m or not raw.startswith(json.dumps(option)[1:-1], m.end()):
        return None
    return m.end(), m.end() + len(json.dumps(option)[1:-1])


def _is_token(tok: Any) -> bool:
    lp = getattr(tok, "logprob", None)
    return (
        isinstance(getattr(tok, "token", None), str)
        and isinstance(lp, int | float)
        and not isinstance(lp, bool)
        and math.isfinite(lp)
        and lp <= 1e-6  # a log-probability; a little over 0 is rounding
    )


def _valid_tokens(tokens: Any, *, strict: bool = True) -> list[Any]:
    """The server's token log-probabilities, if well formed. A malformed answer's (strict) are
    all dropped, so the estimate falls back to "the chosen option gets 1"; malformed top-k
    alternatives are dropped one by one (an alternative fewer only lowers another option's share)."""
    if not isinstance(tokens, list):
        return []
    good = [t for t in tokens if _is_token(t)]
    if strict and len(good) != len(tokens):
        log.warning("ignoring malformed token logprobs from the model server")
        return []
    return good


def option_probabilities(
    raw: str, option: str, options: list[str], logprobs: Any
) -> tuple[dict[str, float], set[str]]:
    """Estimate P(option) for every option from the answer's token logprobs, normalised.

    Options are compared where they part: another option gets the probability of the chosen
    path up to the token where it diverges, times the best top-k alternative token there that
    is consistent with it (shared evenly by options that share that token); the chosen option
    gets the probability of its tokens up to the last point where another option was still
    possible (the closing quote counts, so "Q1" and "Q12" differ). Tokens that are forced
    after that carry no choice and are left out. Options whose divergent token is not in the
    top k get nothing. Without logprobs the chosen option gets 1.

    Returns the normalised probabilities and the options whose estimate is exact: those that
    were the only option consistent with their divergent token, so the grammar forced the rest.
    """
    tokens = _valid_tokens(getattr(logprobs, "content", None))
    span = _value_span(raw, option)
    only_chosen = ({o: (1.0 if o == option else 0.0) for o in options}, set())
    if not tokens or span is None:
        return only_chosen
    start, end = span
    escaped = {o: json.dumps(o)[1:-1] + '"' for o in options}  # value as it appears, closing quote included
    target = escaped[option]
    mass = dict.fromkeys(options, 0.0)
    path_logp, pos, assigned, settled = 0.0, 0, set(), set()
    for tok in tokens:
        t_start, t_end = pos, pos + len(tok.token)
        pos = t_end
        if t_end <= start:
            continue
        if t_start > end:
            break
        prefix = raw[start:t_start] if t_start > start else ""
        if not any(v.startswith(prefix) for o, v in escaped.items() if o != option):
            break  # no other option is still possible: the rest of the value is forced
        lead = raw[t_start:start] if t_start < start else ""  # part of the token before the value
        for alt in _valid_tokens(getattr(tok, "top_logprobs", None), strict=False):
            if alt.token == tok.token or not alt.token.startswith(lead):
                continue
            cont = prefix + alt.token[len(lead) :]
            fits = [
                o
                for o, v in escaped.items()
                if o != option
                and o not in assigned
                and v.startswith(prefix)
                and not target.startswith(cont)
                and (v.startswith(cont) or cont.startswith(v))
            ]
            for o in fits:
                mass[o] = max(mass[o], math.exp(path_logp + alt.logprob) / len(fits))
            if len(fits) == 1:
                settled.add(fits[0])
        assigned.update(o for o, p in mass.items() if p > 0)
        path_logp += tok.logprob
        if t_end > end:
            break
    mass[option] = math.exp(path_logp)
    total = sum(mass.values())
    if total <= 0:
        return only_chosen
    return {o: round(p / total, 4) for o, p in mass.items()}, settled
