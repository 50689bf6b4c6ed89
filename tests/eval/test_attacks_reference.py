"""Our PGD against the field's reference, torchattacks, on the same model, inputs and parameters.

Budgets are chosen so torchattacks succeeds on only part of the photos, so "at least as
successful" is an informative comparison; no random start, so both runs are deterministic.
"""

from __future__ import annotations

import pytest
import torch
from attack_helpers import photos

from retlink.attacks import ClassifierTarget, build_attack
from retlink.tools.vision.efficientnet import shared_model
from tests.conftest import skip_or_fail

try:
    import torchattacks
except ImportError:
    skip_or_fail("torchattacks (the reference implementation, installed by scripts/venv.sh) is missing")


@pytest.mark.parametrize(
    ("targeted", "eps"),
    [
        (False, 0.05 / 255),
        # slow set: the fast set compares the untargeted run, and test_attacks_strong's targeted
        # PGD reaching its class keeps the targeted mode there
        pytest.param(True, 1 / 255, marks=pytest.mark.slow),
    ],
)
def test_pgd_at_least_as_successful_as_torchattacks(targeted, eps):
    model = shared_model()
    x = photos(6)
    with torch.inference_mode():
        labels = model(x).argmax(1)
    goal = (labels + 500) % 1000 if targeted else labels
    params = {"eps": eps, "alpha": eps / 4, "steps": 5, "random_start": False}

    reference = torchattacks.PGD(model, **params)
    if targeted:
        reference.set_mode_targeted_by_label(quiet=True)
    adv_ref = reference(x, goal)
    adv_ours = build_attack("pgd", ClassifierTarget(model, targeted=targeted), **params)(x, goal)

    with torch.inference_mode():
        pred_ref, pred_ours = model(adv_ref).argmax(1), model(adv_ours).argmax(1)
    ok_ref = (pred_ref == goal) if targeted else (pred_ref != goal)
    ok_ours = (pred_ours == goal) if targeted else (pred_ours != goal)
    assert 0 < ok_ref.float().mean() < 1, "budget no longer discriminates: retune eps"
    assert ok_ours.float().mean() >= ok_ref.float().mean()
    assert (adv_ours - x).abs().max() <= eps + 1e-6

    early = build_attack("pgd", ClassifierTarget(model, targeted=targeted), **params, early_stop=True)(
        x, goal
    )
    with torch.inference_mode():
        pred_early = model(early).argmax(1)
    ok_early = (pred_early == goal) if targeted else (pred_early != goal)
    assert torch.equal(ok_early, ok_ours), "early stopping must not change which samples succeed"
