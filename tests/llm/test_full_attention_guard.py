"""Option scoring hands the model its own 4D mask (`OptionTree`), bypassing the model's mask
building, so a model with sliding-window layers, or an attention implementation that takes no
custom mask, would score every option wrongly and without an error. Such models are refused
when they load. Tiny randomly initialised models, built and saved here, go through the real
loading path (`TransformersLLM` on a local folder)."""

from __future__ import annotations

import pytest
import transformers

from retlink.tools.llm.smollm2 import ensure_float_copy
from retlink.tools.llm.transformers_llm import TransformersLLM, check_full_attention

SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1}


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(ensure_float_copy())


def saved(tmp_path, tokenizer, config_class, **extra):
    """A randomly initialised model of `config_class` with the SmolLM2 tokenizer, in a folder."""
    cfg = config_class(**SMALL, vocab_size=len(tokenizer), **extra)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return str(tmp_path)


def test_a_sliding_window_model_is_refused_at_load(tmp_path, tokenizer):
    path = saved(tmp_path, tokenizer, transformers.MistralConfig, sliding_window=4)
    with pytest.raises(ValueError, match="full-attention models only; mistral"):
        TransformersLLM(path)


def test_a_model_with_some_sliding_layers_is_refused(tmp_path, tokenizer):
    path = saved(tmp_path, tokenizer, transformers.Qwen2Config, use_sliding_window=True, sliding_window=4, max_window_layers=1)
    with pytest.raises(ValueError, match="sliding-window"):
        TransformersLLM(path)


def test_full_attention_models_load_and_score(tmp_path, tokenizer):
    """The same families without windows load (Qwen2 names its layers, Mistral does not) and
    choose among options."""
    for sub, config_class, extra in [
        ("qwen2", transformers.Qwen2Config, {}),
        ("mistral", transformers.MistralConfig, {"sliding_window": None}),
    ]:
        llm = TransformersLLM(saved(tmp_path / sub, tokenizer, config_class, **extra))
        choice = llm.choose([{"role": "user", "content": "Pick one."}], ["Q1", "Q2", "NIL"], max_reasoning_tokens=0)
        assert choice.option in ("Q1", "Q2", "NIL") and set(choice.probabilities) == {"Q1", "Q2", "NIL"}
        # each probability is rounded to 4 decimals, so the sum may miss 1 by half a unit per option
        assert sum(choice.probabilities.values()) == pytest.approx(1.0, abs=3 * 0.5e-4 + 1e-9)


def test_an_attention_implementation_without_custom_masks_is_refused():
    cfg = transformers.LlamaConfig(**SMALL, vocab_size=64)
    for impl in ("flash_attention_2", "flex_attention"):
        cfg._attn_implementation_internal = impl
        with pytest.raises(ValueError, match=f"loaded with '{impl}'"):
            check_full_attention(cfg)
    cfg._attn_implementation_internal = "sdpa"
    check_full_attention(cfg)


def test_chunked_attention_is_refused():
    """Llama 4's chunked attention (`attention_chunk_size`) masks like a window: refused too."""
    cfg = transformers.LlamaConfig(**SMALL, vocab_size=64)
    cfg._attn_implementation_internal = "sdpa"
    cfg.attention_chunk_size = 8
    with pytest.raises(ValueError, match="chunked"):
        check_full_attention(cfg)
