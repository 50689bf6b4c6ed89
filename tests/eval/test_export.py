"""Export round trip: exact tensors back bit for bit, PNGs within 8-bit rounding, honest norms."""

from __future__ import annotations

import json

import pytest
import torch

from retlink.eval.export import MANIFEST, export_attacked, load_attacked


def test_export_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 8, 8, generator=gen)
    attacked = (clean + (torch.rand(clean.shape, generator=gen) * 2 - 1) * 4 / 255).clamp(0, 1)
    path = export_attacked(
        tmp_path,
        clean,
        attacked,
        ["img/1", "img 2"],
        attack="pgd",
        params={"eps": 4 / 255, "steps": 3},
        seed=5,
    )
    manifest = json.loads(path.read_text())
    assert path.name == MANIFEST and manifest["attack"] == "pgd" and manifest["seed"] == 5
    assert manifest["params"] == {"eps": 4 / 255, "steps": 3}
    assert [s["png"] for s in manifest["samples"]] == ["img_1.png", "img_2.png"]

    _, exact = load_attacked(tmp_path)
    for i, sid in enumerate(["img/1", "img 2"]):
        assert torch.equal(exact[sid], attacked[i])
    _, png = load_attacked(tmp_path, exact=False)
    for i, sid in enumerate(["img/1", "img 2"]):
        assert (png[sid] - attacked[i]).abs().max() <= 0.5 / 255 + 1e-6
        s = manifest["samples"][i]
        measured = (attacked[i] - clean[i]).abs().max().item()
        assert s["norms"]["linf"] == pytest.approx(measured)
        assert s["norms"]["linf"] <= 4 / 255 + 1e-6
        # the PNG's perturbation is measured separately: it may exceed the budget by <= 0.5/255
        assert s["norms_png"]["linf"] <= 4.5 / 255 + 1e-6
        assert s["norms_png"]["linf"] != s["norms"]["linf"]


def test_export_rejects_bad_input(tmp_path):
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError):
        export_attacked(tmp_path, x, x, ["a", "b"], attack="fgsm", params={}, seed=0)
    with pytest.raises(ValueError):
        export_attacked(
            tmp_path,
            torch.zeros(2, 3, 4, 4),
            torch.zeros(2, 3, 4, 4),
            ["a/b", "a b"],
            attack="fgsm",
            params={},
            seed=0,
        )
