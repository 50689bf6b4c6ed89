"""Every attack on the real EfficientNet-Lite0: stays in budget and in [0, 1], raises the loss it
targets, reproduces with a seed, and leaves the model's parameters and mode untouched."""

from __future__ import annotations

import pytest
import torch
from attack_helpers import photos

from retlink.attacks import ATTACKS, ClassifierTarget, build_attack, presets
from retlink.attacks.targets import dlr_loss
from retlink.tools.vision.efficientnet import build_efficientnet_lite

# (attack, overrides): few steps, so the whole set runs in seconds; budgets are the presets'.
CASES = [
    ("fgsm", {}),
    ("pgd", {"steps": 3}),
    ("pgd_l2", {"steps": 3}),
    ("apgd", {"steps": 4}),
    ("apgd", {"steps": 4, "loss": "dlr"}),
    ("apgd_l2", {"steps": 4}),
    ("cw", {"steps": 8, "lr": 0.003}),  # Adam moves every pixel ~lr/2 at first: keep L2 < eps
    ("square", {"n_queries": 12}),  # score-based: loss queries only, no gradient
]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_efficientnet_lite()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return photos(2)


def _budget(attack) -> tuple[str, float]:
    p = attack.params
    return ("L2", p["eps"]) if attack.name == "cw" or p.get("norm") == "L2" else ("Linf", p["eps"])


@pytest.mark.parametrize(
    ("name", "overrides"), CASES, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in CASES]
)
def test_attack_in_budget_raises_loss_and_reproduces(model, images, name, overrides):
    target = ClassifierTarget(model)
    attack = build_attack(name, target, **overrides, seed=3)
    with torch.inference_mode():
        labels = model(images).argmax(1)
    adv = attack(images, labels)

    assert adv.shape == images.shape and adv.dtype == torch.float32
    assert adv.min() >= 0 and adv.max() <= 1
    norm, eps = _budget(attack)
    delta = (adv - images).flatten(1).double()
    measured = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
    assert (measured <= eps + 1e-6).all(), f"{name} broke its {norm} budget {eps}: {measured.tolist()}"
    assert (measured > 0).all()

    with torch.inference_mode():
        logits_clean, logits_adv = model(images), model(adv)
    if name == "cw":  # CW minimises the margin z_y - max_{i!=y} z_i: it must fall
        assert (target.margin(logits_adv, labels) < target.margin(logits_clean, labels)).all()
    elif overrides.get("loss") == "dlr":
        assert (dlr_loss(logits_adv, labels, False) > dlr_loss(logits_clean, labels, False)).all()
    else:
        ce = torch.nn.functional.cross_entropy
        assert (ce(logits_adv, labels, reduction="none") > ce(logits_clean, labels, reduction="none")).all()

    again = build_attack(name, target, **overrides, seed=3)(images, labels)
    assert torch.equal(adv, again), "same seed must give the same adversarial images"


def test_random_start_depends_on_seed(model, images):
    target = ClassifierTarget(model)
    a = build_attack("pgd", target, steps=1, seed=0)(images[:1])
    b = build_attack("pgd", target, steps=1, seed=1)(images[:1])
    assert not torch.equal(a, b)


def test_model_parameters_mode_and_grads_untouched(images):
    model = build_efficientnet_lite()
    model.train()
    model.net.classifier.weight.requires_grad_(True)
    build_attack("pgd", ClassifierTarget(model), steps=1)(images[:1])
    assert model.training and model.net.bn1.training, "train/eval mode must be restored"
    assert model.net.classifier.weight.requires_grad, "requires_grad flags must be restored"
    assert all(p.grad is None for p in model.parameters()), "no parameter may receive a gradient"


def test_batches_match_one_batch(model, images):
    target = ClassifierTarget(model)
    whole = build_attack("pgd", target, steps=2, random_start=False)(images)
    split = build_attack("pgd", target, steps=2, random_start=False, batch_size=1)(images)
    assert torch.allclose(whole, split, atol=1e-6)


def test_single_image_and_device_round_trip(model, images):
    adv = build_attack("fgsm", ClassifierTarget(model))(images[0])
    assert adv.shape == images[0].shape and adv.device == images.device


def test_rejects_unnormalised_input(model, images):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_attack("fgsm", ClassifierTarget(model))(images * 255)


def test_presets_documented_and_overridable(model):
    table = presets()
    assert set(table) == set(ATTACKS)
    for name, by_preset in table.items():
        assert {"normal", "strong"} <= set(by_preset), name
        attack = build_attack(name, ClassifierTarget(model), preset="strong", seed=7)
        for key, value in by_preset["strong"].items():
            assert attack.params[key] == value
        assert attack.params["seed"] == 7
    assert build_attack("pgd", ClassifierTarget(model), preset="strong", steps=3).params["steps"] == 3
    with pytest.raises(TypeError):
        build_attack("pgd", ClassifierTarget(model), no_such_param=1)
    with pytest.raises(KeyError):
        build_attack("pgd", ClassifierTarget(model), preset="medium")


def test_gaussian_noise_is_seeded_clipped_and_of_its_std(model, images):
    noisy = build_attack("gaussian_noise", ClassifierTarget(model), eps=8 / 255, seed=3)(images)
    again = build_attack("gaussian_noise", ClassifierTarget(model), eps=8 / 255, seed=3)(images)
    other = build_attack("gaussian_noise", ClassifierTarget(model), eps=8 / 255, seed=4)(images)
    assert torch.equal(noisy, again) and not torch.equal(noisy, other)
    assert noisy.min() >= 0 and noisy.max() <= 1
    inside = (images > 0.1) & (images < 0.9)  # away from the clipped edges the noise is N(0, std)
    assert (noisy - images)[inside].std().item() == pytest.approx(8 / 255, rel=0.05)
    assert build_attack("gaussian_noise", ClassifierTarget(model), preset="mat").params["eps"] == 2 / 255
