"""At the strong preset, each attack flips most predictions of the real EfficientNet-Lite0 on
real photos (presets unchanged, so this checks the documented presets themselves)."""

from __future__ import annotations

import pytest
import torch
from attack_helpers import photos

from retlink.attacks import ClassifierTarget, build_attack
from retlink.tools.vision.efficientnet import shared_model


@pytest.fixture(scope="module")
def setup():
    model = shared_model()
    x = photos(4)
    with torch.inference_mode():
        return model, x, model(x).argmax(1)


def _flipped(model, adv, labels) -> float:
    with torch.inference_mode():
        return (model(adv).argmax(1) != labels).float().mean().item()


@pytest.mark.parametrize("name", ["fgsm", "pgd", "pgd_l2"])
def test_strong_preset_flips_most(setup, name):
    model, x, labels = setup
    # early_stop leaves which samples succeed unchanged (test_attacks_reference checks it) and
    # skips the steps after success, so the 50-step presets stay cheap here
    extra = {"early_stop": True} if name != "fgsm" else {}
    adv = build_attack(name, ClassifierTarget(model), preset="strong", seed=0, **extra)(x, labels)
    assert _flipped(model, adv, labels) >= 0.75


@pytest.mark.slow
@pytest.mark.parametrize("name", ["apgd", "apgd_l2", "cw"])
def test_strong_preset_flips_most_slow(setup, name):
    model, x, labels = setup
    adv = build_attack(name, ClassifierTarget(model), preset="strong", seed=0)(x, labels)
    assert _flipped(model, adv, labels) >= 0.75


def test_targeted_pgd_reaches_the_chosen_class(setup):
    model, x, labels = setup
    goal = (labels + 500) % 1000
    attack = build_attack("pgd", ClassifierTarget(model, targeted=True), preset="strong", early_stop=True)
    with torch.inference_mode():  # the attack switches inference mode off for itself
        reached = (model(attack(x, goal)).argmax(1) == goal).float().mean().item()
    assert reached >= 0.75


def test_targeted_needs_labels(setup):
    model, x, _ = setup
    with pytest.raises(ValueError, match="target classes"):
        build_attack("fgsm", ClassifierTarget(model, targeted=True))(x)
