"""The shared prefix cache of the in-process LLM (issue 20, item 5): a call's system message is
prefilled once per model and text, and a call that reuses its KV state computes what it computes
without the cache (within the batching tests' pinned tolerance), alone and in a padded batch;
`cached_tokens` shows the reused prefix in the reasoner's trace. Real SmolLM2-135M weights."""

from __future__ import annotations

import contextlib

import pytest

from retlink.agent.nodes.reasoner import reason
from retlink.agent.prompts import REASONER_SYSTEM, reasoner_messages
from retlink.core.schema import LLMConfig, PromptConfig, ReasonerConfig
from retlink.core.types import Candidate, Caption, Entity
from retlink.tools.llm.transformers_llm import ANSWER_PREFIX, SENTENCE_END
from tests.llm.llm_prompts import CHOOSE, CHOOSE_LONG, DESCRIBE, LOGP_ATOL


@pytest.fixture(scope="module")
def llm():
    from retlink.agent.backends import shared_llm

    return shared_llm(LLMConfig(threads=1))  # one thread: the machine is shared (see LLMConfig.threads)


@contextlib.contextmanager
def prefix_cache(llm, on: bool):
    before, llm.prefix_cache = llm.prefix_cache, on
    try:
        yield
    finally:
        llm.prefix_cache = before


def rows(llm):
    """What concurrent links send: choose rows (with and without a chain of thought) and
    enhancer rows, under two different system messages."""
    return [
        llm._row(CHOOSE, 6, (ANSWER_PREFIX,), ["Q1", "Q2", "NIL"]),
        llm._row(DESCRIBE, 6, SENTENCE_END),
        llm._row(CHOOSE_LONG, 4, (ANSWER_PREFIX,), ["java_coffee", "java_lang", "java_island", "NIL"]),
        llm._row(CHOOSE, 0, (ANSWER_PREFIX,), ["Q1", "Q2", "NIL"]),
        llm._row([{"role": "system", "content": "Be brief."}, *DESCRIBE[1:]], 4),
    ]


def system_tokens(llm, messages) -> int:
    text = llm.tokenizer.apply_chat_template(messages[:1], tokenize=False)
    return len(llm.tokenizer(text, add_special_tokens=False).input_ids)


@pytest.mark.slow  # ten prompts through the real model, twice
def test_a_cached_prefix_computes_what_a_full_prefill_computes_alone_and_batched(llm):
    with prefix_cache(llm, False):
        plain_rows = rows(llm)
        plain = [llm._run_rows([r])[0] for r in plain_rows]
    assert all(r.prefix == 0 for r in plain_rows)
    with prefix_cache(llm, True):
        cached_rows = rows(llm)
        alone = [llm._run_rows([r])[0] for r in cached_rows]
        together = llm._run_rows(rows(llm))
    for row, p, a, b in zip(cached_rows, plain, alone, together, strict=True):
        assert 0 < row.prefix < len(row.ids)
        for got in (a, b):
            assert got.new_ids == p.new_ids and got.text == p.text
            assert got.usage.prompt_tokens == p.usage.prompt_tokens == len(row.ids)
            assert got.usage.cached_tokens == row.prefix and p.usage.cached_tokens == 0
            if p.scores is not None:
                assert got.scores == pytest.approx(p.scores, abs=LOGP_ATOL)
    assert cached_rows[0].prefix == system_tokens(llm, CHOOSE)
    assert cached_rows[4].prefix == system_tokens(llm, [{"role": "system", "content": "Be brief."}])


def test_each_prefix_is_prefilled_once_per_text(llm):
    unique = [{"role": "system", "content": f"You answer in one word. ({id(llm)})"}, {"role": "user", "content": "Seine?"}]
    before = llm.prefix_prefills
    first = llm.generate(unique, max_tokens=3)
    second = llm.generate([unique[0], {"role": "user", "content": "Which river flows through Paris?"}], max_tokens=3)
    assert llm.prefix_prefills == before + 1  # the second call reused the first one's state
    assert first.usage.cached_tokens == second.usage.cached_tokens == system_tokens(llm, unique) > 0
    with prefix_cache(llm, False):
        assert llm.generate(unique, max_tokens=3).text == first.text


def test_no_system_message_no_prefix(llm):
    msgs = [{"role": "user", "content": "Describe the Seine."}]
    assert llm._row(msgs, 4).prefix == 0
    assert llm.generate(msgs, max_tokens=2).usage.cached_tokens == 0


def _state():
    cands = [
        Candidate(entity=Entity(id="java_coffee", name="Java coffee", description="Coffee grown on the island of Java."), score=0.61),
        Candidate(entity=Entity(id="java_island", name="Java", description="An island of Indonesia."), score=0.58),
    ]
    caption = Caption(text="", labels=[("espresso", 0.8), ("cup", 0.1)])
    return {"mention": "Java", "context": "A fresh cup of [Java] on the saucer.", "caption": caption, "candidates": cands}


@pytest.mark.slow  # two reasoner calls
def test_the_reasoners_trace_shows_the_instructions_reused_from_the_cache(llm):
    """With `instructions: system` the task and answer format are the system message, the same in
    every call: the trace's `cached_tokens` is that whole message, longer than the bare system
    prompt that `instructions: last` shares."""
    counts = {}
    for where in ("system", "last"):
        cfg = ReasonerConfig(max_reasoning_tokens=4, prompt=PromptConfig(instructions=where))
        out = reason(_state(), llm=llm, cfg=cfg)
        [call] = out["_detail"]["llm_calls"]
        messages = reasoner_messages("Java", _state()["context"], _state()["caption"], _state()["candidates"], [],
                                     prompt=cfg.prompt)
        assert call["cached_tokens"] == system_tokens(llm, messages) > 0
        counts[where] = call["cached_tokens"]
    assert counts["system"] > counts["last"] == system_tokens(llm, [{"role": "system", "content": REASONER_SYSTEM}])
