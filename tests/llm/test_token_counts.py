"""Per-call token counts (issue 20, item 1): every LLM request says what it prefilled, decoded and
scored, the trace carries them per node and the eval records per link. Real SmolLM2 weights."""

from __future__ import annotations

import pytest

from retlink.core.schema import LLMConfig
from retlink.tools.llm.base import Choice, Generation, TokenUsage, llm_calls

SYSTEM = {"role": "system", "content": "You write short, factual descriptions of entities."}


@pytest.fixture(scope="module")
def llm():
    from retlink.agent.backends import shared_llm

    return shared_llm(LLMConfig())


def prompt_len(llm, messages) -> int:
    text = llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(llm.tokenizer(text, add_special_tokens=False).input_ids)


def test_generate_counts_the_prompt_and_the_new_tokens(llm):
    msgs = [SYSTEM, {"role": "user", "content": "Describe the Eiffel Tower in one sentence."}]
    g = llm.generate(msgs, max_tokens=6)
    assert g.usage is not None
    assert g.usage.prompt_tokens == prompt_len(llm, msgs)
    assert 1 <= g.usage.generated_tokens <= 6


def test_generate_batch_counts_each_row_without_its_padding(llm):
    short = [SYSTEM, {"role": "user", "content": "Paris."}]
    long = [SYSTEM, {"role": "user", "content": "Describe the river Seine, which flows through Paris, briefly."}]
    gens = llm.generate_batch([short, long], max_tokens=5)
    assert [g.usage.prompt_tokens for g in gens] == [prompt_len(llm, short), prompt_len(llm, long)]
    assert all(1 <= g.usage.generated_tokens <= 5 for g in gens)


def test_choose_counts_prompt_reasoning_and_scored_options(llm):
    msgs = [SYSTEM, {"role": "user", "content": "Which is a river? Options: Q1 (Seine), Q2 (Paris). Answer:"}]
    c = llm.choose(msgs, ["Q1", "Q2", "NIL"], max_reasoning_tokens=4)
    assert len(c.usage) == 1
    u = c.usage[0]
    assert u.prompt_tokens == prompt_len(llm, msgs)
    assert u.generated_tokens <= 4
    # at least the tokens of the three options were run to score them
    assert u.scored_tokens >= sum(len(llm.tokenizer(" " + o, add_special_tokens=False).input_ids) for o in ["Q1", "Q2", "NIL"])


def test_llm_calls_lists_what_the_backends_reported():
    u = TokenUsage(prompt_tokens=10, generated_tokens=2)
    assert llm_calls([Generation(text="a", usage=u), Generation(text="b")]) == [u.model_dump()]
    assert llm_calls(Choice(option="a", usage=[u, u])) == [u.model_dump()] * 2
    with pytest.raises(ValueError):
        TokenUsage(prompt_tokens=-1)


@pytest.mark.slow
def test_link_trace_has_the_calls_of_the_enhancer_and_the_reasoner(demo_kb_path, demo_dir, demo_examples):
    from retlink import Linker
    from tests.conftest import fast_config

    # the enhancer writing with the LLM (the default extracts, with no call to count)
    linker = Linker.from_config(fast_config(demo_kb_path, enhancer={"condense": "llm"}))
    ex = demo_examples[0]
    result = linker.link(demo_dir / ex["image"], ex["mention"], context=ex["context"])
    by_node = {e.node: e for e in result.trace}
    calls = by_node["reason"].detail["llm_calls"]
    assert len(calls) == 1 and calls[0]["prompt_tokens"] > 50 and calls[0]["generated_tokens"] <= 16
    enhance = by_node["enhance"]
    assert enhance.skipped is None, enhance  # the demo corpus has pages about this example's candidates
    assert len(enhance.detail["llm_calls"]) == enhance.detail["generated"]  # one call per description written


def test_served_replies_report_their_usage_or_none():
    from openai.types import CompletionUsage
    from openai.types.chat import ChatCompletion

    from retlink.tools.llm.openai_llm import reply_usage

    def reply(usage):
        return ChatCompletion.model_validate({
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
            "usage": usage,
        })

    u = reply_usage(reply(CompletionUsage(prompt_tokens=120, completion_tokens=7, total_tokens=127).model_dump()))
    assert u == TokenUsage(prompt_tokens=120, generated_tokens=7)
    cached = {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127, "prompt_tokens_details": {"cached_tokens": 100}}
    assert reply_usage(reply(cached)).cached_tokens == 100
    assert reply_usage(reply(None)) is None
    bad = ChatCompletion.model_construct(usage=CompletionUsage.model_construct(prompt_tokens=-3, completion_tokens="7"))
    assert reply_usage(bad) is None
