"""The text attack (`attack: text`) and the joint multimodal attack, on real parts: the real
MiniLM text encoder and EfficientNet-Lite0 surrogate, demo photos, and a tiny randomly
initialised Llama with SmolLM2's real tokenizer as the language model that proposes words (the
mechanics: batching, padding, the word masks; the real SmolLM2 proposes in the runner tests)."""

from __future__ import annotations

import string

import numpy as np
import pytest
import torch
import transformers
from attack_helpers import photos

from retlink.attacks import ATTACKS, build_attack
from retlink.attacks.attacked import Features, build_target
from retlink.attacks.multimodal import JointMultimodalAttack, split_steps
from retlink.attacks.text_attack import SentenceState, TextAttack, attack_sentence, fused, margin, query_text
from retlink.attacks.word_candidates import LMProposer, neighbour_proposer

SENTENCE = "a tabby cat dozes on the warm windowsill of the harbour house"
GOLD = "Chelsea is a tabby cat who sleeps on windowsills."
WRONG = ["Chelsea F.C. is a football club in London.", "Chelsea is a district of London by the Thames."]


@pytest.fixture(scope="module")
def encoder():
    from retlink.tools.kb.embedders import shared_text_embedder

    return shared_text_embedder()


@pytest.fixture(scope="module")
def tiny_lm():
    from retlink.tools.llm.smollm2 import ensure_float_copy

    tokenizer = transformers.AutoTokenizer.from_pretrained(ensure_float_copy())
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=len(tokenizer), attn_implementation="eager",
    )
    return transformers.LlamaForCausalLM(cfg).eval(), tokenizer


def state(encoder, words=SENTENCE, image_sims=None) -> SentenceState:
    refs = np.asarray(encoder.embed([GOLD, *WRONG]), dtype=np.float32)
    return SentenceState("Chelsea", words.split(), refs, image_sims)


def test_lm_proposals_are_whole_words_recased_and_the_same_alone_or_batched(tiny_lm):
    model, tokenizer = tiny_lm
    propose = LMProposer(model, tokenizer, k=6)
    words = ["The", "Falcon", "climbed", "away,"]
    together = propose(words, [0, 1, 2, 3])
    for i in range(4):  # left padding and position ids: a row's words do not depend on the batch
        assert propose(words, [i]) == {i: together[i]}
    for i, cands in together.items():
        assert len(cands) == 6 and len(set(cands)) == 6
        core = words[i].strip(string.punctuation)
        for c in cands:
            inner = c.strip(string.punctuation)
            assert inner.isalpha() and inner.lower() != core.lower()
            assert inner[0].isupper() == core[0].isupper()  # the original's capitalisation
    assert all(c.endswith(",") for c in together[3])  # and its punctuation


def test_greedy_text_attack_takes_the_best_edit_each_step(encoder):
    propose = neighbour_proposer(encoder, 6)
    attack = build_attack("text", build_target("classifier", torch.nn.Identity()), "normal", max_substitutions=2, candidates="embedding_neighbours")
    s = state(encoder)
    # brute force the first step: every candidate at every editable position, filtered like the attack
    words = SENTENCE.split()
    anchor = encoder.embed([query_text("Chelsea", words)])[0]
    best = -np.inf
    for i, cands in propose(words, s.editable()).items():
        for c in cands:
            vec = encoder.embed([query_text("Chelsea", [*words[:i], c, *words[i + 1 :]])])[0]
            if vec @ anchor >= attack.min_similarity:
                best = max(best, float(margin((vec @ s.refs.T)[None])[0]))
    record = attack_sentence(s, encoder, propose, attack)
    assert 1 <= len(record["substitutions"]) <= 2
    assert record["margin"]["attacked"] > record["margin"]["clean"]
    first = SentenceState("Chelsea", words, s.refs, None)
    from retlink.attacks.text_attack import greedy_step

    _, after_one = greedy_step(first, encoder, propose, text_weight=0.5, image_weight=0.5, min_similarity=attack.min_similarity)
    assert after_one == pytest.approx(best, abs=1e-5)
    assert record["text_similarity"]["attacked"] < record["text_similarity"]["clean"]
    assert record["sentence_similarity"] >= attack.min_similarity - 1e-6
    edited = record["context"].split()
    changed = [i for i, (a, b) in enumerate(zip(words, edited, strict=True)) if a != b]
    assert changed == sorted(e["position"] for e in record["substitutions"])
    # the similarity filter bounds the edit: nothing is similar enough at 1.0
    strict = build_attack("text", build_target("classifier", torch.nn.Identity()), min_similarity=1.0)
    none = attack_sentence(state(encoder), encoder, propose, strict)
    assert none["substitutions"] == [] and none["context"] == SENTENCE


def test_the_mention_is_never_edited(encoder):
    s = state(encoder, "Chelsea dozes on the warm windowsill")
    assert 0 not in s.editable() and s.editable() == [1, 2, 3, 4, 5]


def test_text_attack_parameters_are_checked():
    target = build_target("classifier", torch.nn.Identity())
    assert ATTACKS["text"] is TextAttack
    with pytest.raises(ValueError, match="candidates 'bert'"):
        build_attack("text", target, candidates="bert")
    with pytest.raises(ValueError, match="at least 1"):
        build_attack("text", target, max_substitutions=0)
    x = photos(1)
    assert torch.equal(build_attack("text", target)(x), x)  # the image half: none


def test_fused_score_uses_text_alone_where_an_entity_has_no_image():
    text = np.array([[0.9, 0.5, 0.4]])
    out = fused(text, np.array([0.1, np.nan, 0.8]), 0.5, 0.5)
    assert out[0].tolist() == pytest.approx([0.5, 0.5, 0.6])
    assert margin(out)[0] == pytest.approx(0.1)


def test_split_steps():
    assert split_steps(10, 3) == [4, 3, 3] and split_steps(2, 2) == [1, 1] and split_steps(1, 3) == [1, 0, 0]


def test_joint_attack_moves_both_halves_on_one_objective(encoder):
    from retlink.tools.vision.efficientnet import shared_network

    net = shared_network("efficientnet_lite0")
    x = photos(4)
    feats = torch.nn.functional.normalize(Features(net)(x).detach(), dim=-1)
    # sample 0's candidates: gold = photo 0's own features, wrong ones photos 1 and 2 (all have images)
    refs = torch.stack([feats[0], feats[1], feats[2]])[None]
    has = torch.ones(1, 3, dtype=torch.bool)
    pgd = build_attack("pgd", build_target("embedding_toward_distractor", net), eps=4 / 255, alpha=1 / 255, steps=4, seed=0)
    text = build_attack("text", pgd.target, candidates="embedding_neighbours", max_substitutions=1)
    s = state(encoder)
    joint = JointMultimodalAttack(pgd, text, encoder, neighbour_proposer(encoder, 6), rounds=2)
    adv, (record,) = joint(x[:1], refs, has, [s])
    assert 0 < (adv - x[:1]).abs().max() <= 4 / 255 + 1e-6
    assert len(record["substitutions"]) == 1 and record["margin"]["attacked"] > record["margin"]["clean"]
    # the image half alone: a sample without a sentence still gets its image steps, and no record
    adv2, (empty,) = joint(x[:1], refs, has, [None])
    assert empty == {} and (adv2 - x[:1]).abs().max() > 0
    # the text edit is chosen on the fused score with the attacked image: with the image weight
    # at 0 the same attack is the text attack alone (same candidates, same greedy objective)
    text_only = build_attack("text", pgd.target, candidates="embedding_neighbours", image_weight=0.0)
    alone = attack_sentence(state(encoder), encoder, neighbour_proposer(encoder, 6), text_only)
    joint0 = JointMultimodalAttack(pgd, text_only, encoder, neighbour_proposer(encoder, 6), rounds=2)
    _, (rec0,) = joint0(x[:1], refs, has, [state(encoder)])
    assert rec0["substitutions"] == alone["substitutions"]


def test_eval_configs_check_both_halves_at_load(tmp_path):
    from retlink.core.errors import ConfigError
    from retlink.eval.config import load_eval_config

    base = {
        "name": "t",
        "dataset": {"key": "demo"},
        "kb": {"path": str(tmp_path / "kb")},
        "pipelines": [{"name": "baseline", "kind": "baseline"}],
    }
    ok = load_eval_config({**base, "attacks": [
        {"name": "t", "attack": "text", "preset": "strong", "params": {"candidates": "embedding_neighbours"}},
        {"name": "m", "attack": "multimodal", "preset": "mat", "params": {"max_substitutions": 2, "rounds": 2}},
    ]})
    assert ok.attack("t").resolved_params()["max_substitutions"] == 3
    assert ok.attack("m").image_params() == {}  # the text keys are not PGD's
    for params, message in (
        ({"candidats": "lm"}, "unknown parameter(s) candidats"),
        ({"candidates": "bert"}, "candidates 'bert'"),
        ({"max_substitutions": "2"}, "attacks[0].params.max_substitutions"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
            load_eval_config({**base, "attacks": [{"name": "t", "attack": "text", "params": params}]})
    for params, message in (({"rounds": 0}, "rounds"), ({"min_similarity": 2.0}, "no cosine"), ({"neighbour": 3}, "neighbour")):
        with pytest.raises(ConfigError, match=message):
            load_eval_config({**base, "attacks": [{"name": "m", "attack": "multimodal", "params": params}]})
