"""Text perturbations and settings: seeded, doing what they say; the one-word substitution
really lowers the real MiniLM similarity; the multimodal attack perturbs both modalities."""

from __future__ import annotations

import pytest
import torch
from attack_helpers import photos

from retlink.attacks import ClassifierTarget, build_attack
from retlink.attacks.multimodal import LinkInput, MultimodalAttack
from retlink.attacks.text import (
    char_noise,
    substitute_one_word,
    typo_variants,
    word_dropout,
    word_permutation,
)
from retlink.eval.settings import Setting, apply_setting

TEXT = "the tabby cat sleeps on a warm windowsill near the old harbour"


def test_char_noise_seeded_and_rate():
    assert char_noise(TEXT, 0.5, seed=1) == char_noise(TEXT, 0.5, seed=1)
    assert char_noise(TEXT, 0.5, seed=1) != char_noise(TEXT, 0.5, seed=2)
    assert char_noise(TEXT, 0.0) == TEXT
    noisy = char_noise(TEXT, 1.0, seed=0).split()
    assert len(noisy) == len(TEXT.split())
    assert sum(a != b for a, b in zip(noisy, TEXT.split(), strict=True)) >= 10


def test_word_dropout_and_permutation():
    words = TEXT.split()
    dropped = word_dropout(TEXT, 0.5, seed=0).split()
    assert 0 < len(dropped) < len(words) and all(w in words for w in dropped)
    assert word_dropout(TEXT, 1.0, seed=0) in words  # one word survives
    assert word_dropout(TEXT, 0.0) == TEXT
    perm = word_permutation(TEXT, seed=0)
    assert perm != TEXT and sorted(perm.split()) == sorted(words)
    assert word_permutation("same same", seed=0) == "same same"


def test_typo_variants():
    v = typo_variants("cat")
    assert "ct" in v and "act" in v and "catt" in v and "cat" not in v


@pytest.fixture(scope="module")
def encoder():
    from retlink.tools.kb.embedders import shared_text_embedder

    return shared_text_embedder()


def test_one_word_substitution_hurts_the_encoder(encoder):
    ref = encoder.embed(["Tabby cat: a domestic cat with a striped coat"])[0]
    edit = substitute_one_word(
        "a tabby cat sleeping on the sofa",
        ref,
        encoder,
        prefix="Chelsea",
        vocabulary=["rocket", "coffee", "astronaut", "harbour"],
        seed=0,
    )
    assert edit.similarity_attacked < edit.similarity_clean
    changed = [
        (a, b)
        for a, b in zip(
            edit.text.split(), ["a", "tabby", "cat", "sleeping", "on", "the", "sofa"], strict=True
        )
        if a != b
    ]
    assert len(changed) == 1 and changed[0] == (edit.replacement, edit.original)
    again = substitute_one_word(
        "a tabby cat sleeping on the sofa",
        ref,
        encoder,
        prefix="Chelsea",
        vocabulary=["rocket", "coffee", "astronaut", "harbour"],
        seed=0,
    )
    assert again == edit


def test_settings():
    s = LinkInput(torch.zeros(3, 4, 4), "Chelsea", "a cat")
    assert apply_setting(s, "i2t") == LinkInput(s.image, "", "")
    assert apply_setting(s, "i2t_mention") == LinkInput(s.image, "Chelsea", "")
    assert apply_setting(s, Setting.IT2T) is s
    assert apply_setting(s, Setting.TEXT_ONLY).image is None


def test_multimodal_attack(encoder):
    from retlink.tools.vision.efficientnet import shared_model

    x = photos(2)
    samples = [
        LinkInput(x[0], "Chelsea", "a tabby cat sleeping on the sofa"),
        LinkInput(x[1], "Eileen Collins", "an astronaut in her orange suit"),
    ]
    refs = encoder.embed(["Tabby cat", "Eileen Collins, NASA astronaut"])
    attack = MultimodalAttack(
        build_attack("pgd", ClassifierTarget(shared_model()), steps=2),
        encoder,
        vocabulary=["rocket", "coffee"],
    )
    out, edits = attack(samples, refs)
    for before, after, edit in zip(samples, out, edits, strict=True):
        assert 0 < (after.image - before.image).abs().max() <= 8 / 255 + 1e-6
        assert after.mention == before.mention and after.context != before.context
        assert edit.similarity_attacked < edit.similarity_clean
