"""LLM paraphrases as a text perturbation (`text: {kind: paraphrase}`): the real in-process
SmolLM2 rewrites, the disk cache answers the second time, and a bad reply keeps the original."""

from __future__ import annotations

import pytest

from retlink.agent import backends
from retlink.attacks.paraphrase import clean_reply, messages_for, paraphrase
from retlink.core.errors import ConfigError
from retlink.datasets.base import Sample
from retlink.eval.config import SettingSpec, load_eval_config
from retlink.eval.runner import link_inputs


def test_clean_reply_takes_the_sentence_and_never_returns_nothing():
    original = "A cup of Java in the morning."
    assert clean_reply('Paraphrase: "Morning coffee, a Java."\nmore text', original) == "Morning coffee, a Java."
    assert clean_reply("  \n \n", original) == original
    assert clean_reply('""', original) == original
    long = "First sentence here. " + "word " * 200
    assert clean_reply(long, original) == "First sentence here."


def test_seeds_pick_different_phrasings():
    prompts = {messages_for("x", seed)[0]["content"] for seed in range(6)}
    assert len(prompts) > 1


def test_llm_is_only_for_a_paraphrase():
    SettingSpec(name="p", setting="it2t", text={"kind": "paraphrase", "llm": {"model": "smollm2-embedded"}})
    with pytest.raises(ValueError, match="only a paraphrase"):
        SettingSpec(name="d", setting="it2t", text={"kind": "word_dropout", "llm": {"model": "smollm2-embedded"}})


def test_an_unknown_llm_key_is_refused_at_load(tmp_path):
    from evalrun_helpers import small_config

    cfg = small_config(tmp_path / "kb", tmp_path / "runs")
    cfg["settings"] = [{"name": "p", "setting": "it2t", "text": {"kind": "paraphrase", "llm": {"modle": "x"}}}]
    with pytest.raises(ConfigError, match="modle"):
        load_eval_config(cfg)


@pytest.mark.slow
def test_paraphrase_with_the_in_process_llm_is_stored_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("RETLINK_CACHE", str(tmp_path))
    text = "The red logo of the Ruby language was on the conference badge."
    first = paraphrase(text, seed=0)
    assert first.strip() and len(first) < 4 * len(text) + 20
    assert list((tmp_path / "paraphrases").rglob("*.json"))  # stored

    def dead_llm(*_a, **_k):  # injected fault: a second call must not reach the model
        raise AssertionError("the model was asked again")

    monkeypatch.setattr(backends, "shared_llm", dead_llm)
    assert paraphrase(text, seed=0) == first
    with pytest.raises(AssertionError, match="asked again"):
        paraphrase(text, seed=1)  # another seed is another prompt: not in the store

    s = Sample(id="x:1", image_path=None, mention="Ruby", context=text, gold_id="ruby", split="dev")
    spec = SettingSpec(name="para", setting="it2t", text={"kind": "paraphrase"})
    seed = next(k for k in range(100) if link_inputs.__globals__["text_seed"](k, s.id, "para") % 3 == 0)
    from retlink.attacks.paraphrase import INSTRUCTIONS

    assert len(INSTRUCTIONS) == 3
    image, mention, context = link_inputs(s, spec, "IMG", seed)
    assert (image, mention, context) == ("IMG", "Ruby", first)  # seed maps to phrasing 0: the stored one
