"""`llm.quantize: int8` (issue 20): the in-process model's linear layers hold int8 weights, a
row computes exactly what it computes alone even when concurrent calls arrive together (one
scale over a dynamically quantized layer's whole input would otherwise couple batch-mates), and
the knob is refused where it cannot apply. Real SmolLM2-135M weights."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from retlink.core.schema import LLMConfig
from tests.llm.llm_prompts import rows


@pytest.fixture(scope="module")
def llm():
    from retlink.agent.backends import shared_llm

    return shared_llm(LLMConfig(threads=1, quantize="int8"))


def test_every_linear_layer_holds_int8_weights(llm):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    linears = [m for m in llm.model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in llm.model.modules() if isinstance(m, DynamicInt8Linear)]
    assert linears == []  # the float layers are gone, the LM head included
    assert len(quantized) == 7 * llm.model.config.num_hidden_layers + 1
    assert all(m.weight().dtype == torch.qint8 for m in quantized)


@pytest.mark.slow  # ten prompts through the real model
def test_a_row_arriving_with_others_computes_exactly_what_it_computes_alone(llm):
    alone = [llm._run_rows([r])[0] for r in rows(llm)]
    together = llm._run_rows(rows(llm))
    for a, b in zip(alone, together, strict=True):
        assert b.new_ids == a.new_ids and b.text == a.text and b.usage == a.usage
        assert b.scores == a.scores  # exactly: the rows never share a quantization scale
    assert together[3].new_ids == [] and together[3].scores is not None
    assert len(together[4].new_ids) == 6


def test_an_option_scores_exactly_what_it_scores_as_the_only_option(llm):
    """One quantization scale over a sequence would couple options scored in one sequence (it
    flipped a choice in review): a quantized model scores each option in its own pass."""
    from retlink.tools.llm.transformers_llm import ANSWER_PREFIX, Row
    from tests.llm.llm_prompts import CHOOSE

    ids = llm._prompt_ids(CHOOSE)
    options = ["Q1", "Q2", "NIL", "java_coffee"]
    for max_new in (0, 6):
        [together] = llm._run_rows([Row(ids, max_new, (ANSWER_PREFIX,), options)])
        alone = [llm._run_rows([Row(ids, max_new, (ANSWER_PREFIX,), [o])])[0].scores[0] for o in options]
        assert together.scores == alone


def test_the_choice_is_one_of_the_options_with_probabilities_that_sum_to_one(llm):
    from tests.llm.llm_prompts import CHOOSE_LONG

    options = ["java_coffee", "java_lang", "java_island", "NIL"]
    choice = llm.choose(CHOOSE_LONG, options, max_reasoning_tokens=4)
    assert choice.option in options
    assert sum(choice.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert choice.usage[0].generated_tokens <= 4


def test_int8_is_refused_for_a_served_model_and_off_the_cpu():
    from retlink.tools.llm.transformers_llm import quantized

    with pytest.raises(ValidationError, match="in-process transformers backend"):
        LLMConfig(backend="openai", base_url="http://127.0.0.1:1/v1", quantize="int8")
    with pytest.raises(ValidationError):
        LLMConfig(quantize="int4")
    with pytest.raises(ValueError, match="CPU only"):
        quantized(torch.nn.Sequential(torch.nn.Linear(2, 2)), "int8", "cuda")
