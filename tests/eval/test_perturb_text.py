"""Text perturbations and settings: seeded, doing what they say (the adversarial word
substitutions and the multimodal attack: test_text_attacks.py)."""

from __future__ import annotations

import torch

from retlink.attacks.multimodal import LinkInput
from retlink.attacks.text import char_noise, word_dropout, word_permutation
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


def test_settings():
    s = LinkInput(torch.zeros(3, 4, 4), "Chelsea", "a cat")
    assert apply_setting(s, "i2t") == LinkInput(s.image, "", "")
    assert apply_setting(s, "i2t_mention") == LinkInput(s.image, "Chelsea", "")
    assert apply_setting(s, Setting.IT2T) is s
    assert apply_setting(s, Setting.TEXT_ONLY).image is None
