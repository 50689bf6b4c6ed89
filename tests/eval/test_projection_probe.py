"""The projection probe on a tiny randomly initialised network (no weights needed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retlink.eval.experiments.projection_probe import ProjectedRetrieval, attacked, compare, train_projection


class TinyNet(nn.Module):
    """A small conv net with the `features` method the probe reads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, stride=2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _data(n: int, kb: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, len(kb), (n,), generator=g)
    x = (kb[y] + 0.1 * torch.randn(n, *kb.shape[1:], generator=g)).clamp(0, 1)
    return x, y


def _tiny() -> tuple[TinyNet, torch.Tensor, torch.Tensor]:
    """The network, six KB images and their features."""
    net = TinyNet()
    kb = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        return net, kb, net.features(kb)


def test_identity_projection_is_plain_cosine_retrieval():
    net, kb, feats = _tiny()
    model = ProjectedRetrieval(net, feats)
    x, _ = _data(5, kb, 1)
    with torch.no_grad():
        plain = F.normalize(net.features(x), dim=-1) @ F.normalize(feats, dim=-1).T
        assert torch.equal(model(x).argmax(1), plain.argmax(1))


def test_training_lowers_the_loss_and_only_the_projection_moves():
    net, kb, feats = _tiny()
    model = ProjectedRetrieval(net, feats)
    conv_before = net.conv.weight.clone()
    losses = train_projection(model, *_data(32, kb, 2), epochs=4, eps=2 / 255, steps=1, lr=5e-2, seed=0)
    assert losses[-1] < losses[0]
    assert torch.equal(net.conv.weight, conv_before)
    assert not torch.equal(model.proj.weight, torch.eye(16))


def test_attack_stays_in_budget_and_compare_pairs_the_arms():
    net, kb, feats = _tiny()
    x, y = _data(8, kb, 3)
    adv = attacked(ProjectedRetrieval(net, feats), x, y, eps=4 / 255, steps=2, seed=0)
    assert (adv - x).abs().max() <= 4 / 255 + 1e-6 and not torch.equal(adv, x)
    report = compare(net, list(kb), _data(16, kb, 4), (x, y), epochs=1, eps=4 / 255, train_steps=1, test_steps=2)
    for cond in ("clean", "pgd"):
        assert abs(report[f"diff_{cond}"][0] - (report[f"trained_{cond}"][0] - report[f"identity_{cond}"][0])) < 0.11
    assert report["n_test"] == 8 and len(report["train_losses"]) == 1
