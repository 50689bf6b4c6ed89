"""Defences in the graph: detection reroutes a PGD image; purification is applied and traced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from retlink import Linker
from retlink.attacks import ClassifierTarget, build_attack
from retlink.core.schema import DetectorConfig, PurifyStep
from retlink.tools.vision.detector import SqueezeDetector
from retlink.tools.vision.efficientnet import preprocess, shared_model
from retlink.tools.vision.purify import Purifier, apply_pil, purify_pil
from tests.conftest import fast_config


def _pil(t: torch.Tensor) -> Image.Image:
    return Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def clean_and_attacked(demo_dir):
    """The chelsea photo at the model's input size, and a PGD (eps 8/255) copy of it."""
    model = shared_model()
    x = preprocess(Image.open(demo_dir / "images" / "chelsea.jpg").convert("RGB")).unsqueeze(0)
    y = model(x).argmax(-1)
    x_adv = build_attack("pgd", ClassifierTarget(model), preset="normal", seed=0)(x, y)
    assert model(x_adv).argmax(-1).item() != y.item()
    # PNG-exact: an 8-bit round trip must keep the attack (what a user would upload)
    adv = _pil(x_adv[0])
    assert model(preprocess(adv).unsqueeze(0)).argmax(-1).item() != y.item()
    return _pil(x[0]), adv


@pytest.mark.parametrize("kind", ["jpeg", "resample", "bitdepth", "median"])
def test_each_purification_step_keeps_size_and_changes_pixels(kind, demo_dir):
    img = Image.open(demo_dir / "images" / "coffee.jpg").convert("RGB")
    out = apply_pil(img, PurifyStep(kind=kind, bits=3))
    assert out.size == img.size and out.mode == "RGB"
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(img, dtype=int)).mean() > 0.1


def test_purifier_is_exact_forward_and_straight_through_backward(demo_dir):
    steps = (PurifyStep(kind="jpeg", quality=50),)
    img = Image.open(demo_dir / "images" / "coffee.jpg").convert("RGB").resize((64, 48))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0).requires_grad_(True)
    y = Purifier(steps)(x)
    expected = np.asarray(purify_pil(img, steps), dtype=np.float32) / 255
    assert np.allclose(y[0].detach().permute(1, 2, 0).numpy(), expected, atol=1 / 255)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))


def test_resample_purifier_is_exact_forward_and_differentiates_the_resample(demo_dir):
    """The resample's BPDA gradient is its own (a low-pass), not the identity's: an attack that
    pretended the resample was not there would waste its budget on frequencies it removes."""
    import torch.nn.functional as F

    from retlink.tools.vision.purify import differentiable_approximation

    steps = (PurifyStep(kind="resample", scale=0.5), PurifyStep(kind="jpeg", quality=75))
    img = Image.open(demo_dir / "images" / "coffee.jpg").convert("RGB").resize((64, 48))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0).requires_grad_(True)
    y = Purifier(steps)(x)
    expected = np.asarray(purify_pil(img, steps), dtype=np.float32) / 255
    assert np.allclose(y[0].detach().permute(1, 2, 0).numpy(), expected, atol=1 / 255)  # the exact PIL steps
    # the approximation is close to what PIL's resample does (JPEG aside)
    pil_resample = np.asarray(purify_pil(img, steps[:1]), dtype=np.float32) / 255
    approx = differentiable_approximation(x.detach(), steps)[0].permute(1, 2, 0).numpy()
    assert np.abs(approx - pil_resample).mean() < 2 / 255
    # the gradient is the approximation's: a checkerboard (the highest frequency) is washed out
    weights = torch.ones_like(x)
    weights[..., ::2, ::2] = -1.0
    weights[..., 1::2, 1::2] = -1.0
    (y * weights).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    (F.interpolate(F.interpolate(x2, size=(24, 32), mode="bilinear", antialias=True), size=(48, 64), mode="bilinear", antialias=True) * weights).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)
    assert x.grad.abs().mean() < 0.1 * weights.abs().mean()  # the identity would pass it whole


def test_detector_separates_clean_from_pgd(clean_and_attacked):
    clean, adv = clean_and_attacked
    det = SqueezeDetector(shared_model(), DetectorConfig().squeezers)
    threshold = DetectorConfig().threshold
    assert det.score(clean) < threshold < det.score(adv)


def test_flagged_image_takes_the_cautious_route(demo_kb_path, clean_and_attacked):
    clean, adv = clean_and_attacked
    guarded = Linker.from_config(fast_config(demo_kb_path, defence={"detector": {"enabled": True}}, enhancer={"enabled": False}))
    context = "[Chelsea] dozes on the windowsill after breakfast."
    r_adv = guarded.link(adv, "Chelsea", context)
    nodes = [e.node for e in r_adv.trace]
    assert r_adv.perturbed and "looks perturbed" in r_adv.perturbation_note
    assert "purify" in nodes
    assert next(e for e in r_adv.trace if e.node == "plan_queries").detail["widened"]
    r_clean = guarded.link(clean, "Chelsea", context)
    assert not r_clean.perturbed and "purify" not in [e.node for e in r_clean.trace]
    assert r_clean.entity_id == "chelsea_cat"


def test_detector_off_by_default_is_traced(linker, demo_dir):
    r = linker.link(demo_dir / "images" / "brick.jpg", "Brick")
    detect = next(e for e in r.trace if e.node == "detect")
    assert detect.skipped == "detector disabled" and not r.perturbed
