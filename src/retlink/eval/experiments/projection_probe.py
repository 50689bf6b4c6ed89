"""Does an adversarially fine-tuned projection over the frozen image embedder buy robustness?

The decision-layer issue asks for a small projection over the frozen image embedder, trained the
MAT way, *where it measurably helps*. This is the measurement that decides: a square linear map
`W` (initialised to the identity) over EfficientNet-Lite pooled features, applied to both the
mention image and the KB images, trained on a dataset's dev split with cross-entropy over all KB
entities on the clean image and on a PGD image made against the current `W` (adversarial
training, Madry et al. 2018), then compared with the identity on test samples under white-box
PGD *through* `W` (the attacker knows the projection). Image-only retrieval Hits@1, paired
bootstrap CIs.

    python -m retlink.eval.experiments.projection_probe [--dataset logos] [--train 128] [--test 60]

Nothing is written beside the KB: a projection that does not help is not worth a pipeline
option. The README records the outcome.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from retlink.attacks import build_attack
from retlink.attacks.targets import ClassifierTarget
from retlink.eval.runs import bootstrap_ci

log = logging.getLogger(__name__)


class ProjectedRetrieval(nn.Module):
    """Logits over KB entities: cosine of the projected image features with the projected KB
    image features, over a temperature. `proj` is the only trainable part."""

    def __init__(self, network: nn.Module, kb_features: torch.Tensor, temperature: float = 0.05) -> None:
        super().__init__()
        self.network = network
        dim = kb_features.shape[1]
        self.proj = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(dim))
        self.register_buffer("kb_features", kb_features)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = F.normalize(self.proj(self.network.features(x)), dim=-1)
        keys = F.normalize(self.proj(self.kb_features), dim=-1)
        return query @ keys.T / self.temperature


def image_tensor(path: Path, size: int = 224) -> torch.Tensor:
    """An image as a (3, size, size) float tensor in [0, 1] (the attack space)."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def kb_features(network: nn.Module, images: Sequence[torch.Tensor], batch: int = 32) -> torch.Tensor:
    """The frozen network's pooled features of the KB images."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            out.append(network.features(torch.stack(list(images[i : i + batch]))).float())
    return torch.cat(out).clone()


def hits(model: ProjectedRetrieval, x: torch.Tensor, y: torch.Tensor, batch: int = 16) -> np.ndarray:
    """Per-sample top-1 correctness."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append((model(x[i : i + batch]).argmax(dim=1) == y[i : i + batch]).numpy())
    return np.concatenate(out).astype(float)


def attacked(
    model: ProjectedRetrieval, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, seed: int
) -> torch.Tensor:
    """White-box L-inf PGD through the whole model (network and projection), untargeted CE."""
    attack = build_attack(
        "pgd",
        ClassifierTarget(model),
        eps=eps,
        alpha=max(eps / 4, 2.5 * eps / steps),
        steps=steps,
        seed=seed,
        batch_size=16,
    )
    return attack(x, y)


def train_projection(
    model: ProjectedRetrieval,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    eps: float,
    steps: int,
    lr: float,
    seed: int,
) -> list[float]:
    """Adversarial training of `model.proj` (clean + PGD-through-the-current-W loss); returns
    the mean loss per epoch."""
    opt = torch.optim.Adam(model.proj.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), 16):
            idx = order[i : i + 16]
            xb, yb = x[idx], y[idx]
            xa = attacked(model, xb, yb, eps=eps, steps=steps, seed=seed + epoch * 1000 + i)
            model.proj.weight.requires_grad_(True)
            loss = F.cross_entropy(model(xb), yb) + F.cross_entropy(model(xa), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
        log.info("epoch %d: loss %.4f", epoch + 1, losses[-1])
    return losses


def compare(
    network: nn.Module,
    kb_images: Sequence[torch.Tensor],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int = 2,
    eps: float = 8 / 255,
    train_steps: int = 3,
    test_steps: int = 10,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, object]:
    """Identity vs adversarially trained projection: Hits@1 clean and under PGD, paired CIs."""
    feats = kb_features(network, kb_images)
    identity = ProjectedRetrieval(network, feats)
    trained = ProjectedRetrieval(network, feats)
    losses = train_projection(trained, *train, epochs=epochs, eps=eps, steps=train_steps, lr=lr, seed=seed)
    x, y = test
    rows: dict[str, dict[str, np.ndarray]] = {}
    for name, model in (("identity", identity), ("trained", trained)):
        rows[name] = {
            "clean": hits(model, x, y),
            "pgd": hits(model, attacked(model, x, y, eps=eps, steps=test_steps, seed=seed), y),
        }
    report: dict[str, object] = {
        "train_losses": losses,
        "n_test": len(x),
        "eps": eps,
        "test_steps": test_steps,
    }
    for cond in ("clean", "pgd"):
        for name in rows:
            v = rows[name][cond]
            report[f"{name}_{cond}"] = [
                round(100 * float(v.mean()), 1),
                *[round(100 * c, 1) for c in bootstrap_ci(v)],
            ]
        diff = rows["trained"][cond] - rows["identity"][cond]
        report[f"diff_{cond}"] = [
            round(100 * float(diff.mean()), 1),
            *[round(100 * c, 1) for c in bootstrap_ci(diff, n_resamples=2000)],
        ]
    return report


def load_split(
    dataset: str, split: str, limit: int, index: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `limit` samples of a split with an image and a KB gold: images and gold indices."""
    from retlink.datasets import load_dataset

    xs, ys = [], []
    for s in load_dataset(dataset).samples(split):
        if s.image_path is None or s.gold_id not in index:
            continue
        xs.append(image_tensor(s.image_path))
        ys.append(index[s.gold_id])
        if len(xs) == limit:
            break
    return torch.stack(xs), torch.tensor(ys)


def main(argv: Sequence[str] | None = None) -> None:
    from rich.console import Console

    from retlink.datasets import load_dataset
    from retlink.tools.vision.efficientnet import shared_network

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="logos")
    p.add_argument("--train", type=int, default=128, help="dev samples to train on")
    p.add_argument("--test", type=int, default=60, help="test samples to compare on")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--network", default="efficientnet_lite0")
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    network = shared_network(args.network)
    entities = [e for e in load_dataset(args.dataset).entities() if e.image_paths]
    index = {e.id: i for i, e in enumerate(entities)}
    kb_images = [image_tensor(Path(e.image_paths[0])) for e in entities]
    report = compare(
        network,
        kb_images,
        load_split(args.dataset, "dev", args.train, index),
        load_split(args.dataset, "test", args.test, index),
        epochs=args.epochs,
    )
    Console().print_json(json.dumps(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
