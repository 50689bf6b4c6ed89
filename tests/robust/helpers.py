"""Shared parts of the robust-encoder tests: a randomly initialised EfficientNet-Lite0 saved as a
checkpoint (no weights download; small images keep it cheap), a small built benchmark in the
logos layout made from the demo's entity images, and a PGD fooling rate measured on a network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from retlink.datasets import load_dataset
from retlink.train.robust_loop import PGDSettings, pgd_linf

SIZE = 32  # training and measuring at 32x32: the tests' compute budget on 2 cores


def random_checkpoint(path: Path, seed: int = 0) -> Path:
    """A randomly initialised Lite0 (timm's init, seeded) written as image weights."""
    import timm

    from retlink.tools.vision.efficientnet import EfficientNetLite
    from retlink.tools.vision.weights import save_weights

    torch.manual_seed(seed)
    model = EfficientNetLite(timm.create_model("efficientnet_lite0", pretrained=False), "efficientnet_lite0").eval()
    save_weights(path, model, {"objective": "random initialisation (tests)", "seed": seed})
    return path


def make_benchmark(root: Path, n_entities: int = 12) -> Path:
    """A built benchmark (`logos` loader layout) of demo entities: each has its KB image and a
    train-split mention image that is another crop of it."""
    demo = load_dataset("demo")
    entities = [e for e in demo.entities() if e.image_paths][:n_entities]
    (root / "kb_image").mkdir(parents=True)
    (root / "mention_image").mkdir()
    lines, records = [], []
    for i, e in enumerate(entities):
        src = Path(e.image_paths[0])
        shutil.copy(src, root / "kb_image" / f"{e.id}{src.suffix}")
        lines.append(json.dumps({"id": e.id, "name": e.name, "aliases": [], "description": e.description,
                                 "image_paths": [f"kb_image/{e.id}{src.suffix}"]}))
        with Image.open(src) as im:
            im = im.convert("RGB")
            w, h = im.size
            im.crop((w // 10, h // 10, w - w // 12, h - h // 12)).save(root / "mention_image" / f"m{i}.jpg", quality=85)
        records.append({"id": f"T-{i}", "sentence": f"The {e.name} here.", "mentions": e.name, "imgPath": f"m{i}.jpg",
                        "answer": e.id})
    (root / "entities.jsonl").write_text("\n".join(lines) + "\n")
    (root / "qid2id.json").write_text(json.dumps({e.id: i for i, e in enumerate(entities)}))
    (root / "WIKIMEL_train.json").write_text(json.dumps(records))
    for split in ("dev", "test"):
        (root / f"WIKIMEL_{split}.json").write_text("[]")
    (root / "kb_entity.json").write_text("[]")
    return root


def fooled_retrieval(model: torch.nn.Module, queries: torch.Tensor, keys: torch.Tensor, gold: torch.Tensor, eps: float) -> float:
    """Share of queries whose nearest key (cosine) is not their gold one after a 10-step L-inf PGD
    that pushes each query away from its gold key and toward the rest (made on `model` itself)."""
    with torch.no_grad():
        k = F.normalize(model.features(keys), dim=-1)

    def loss(z: torch.Tensor) -> torch.Tensor:
        sims = F.normalize(model.features(z), dim=-1) @ k.T / 0.05
        return F.cross_entropy(sims, gold)

    adv = pgd_linf(queries, loss, PGDSettings(eps, 10, eps / 4), torch.Generator().manual_seed(1))
    with torch.no_grad():
        nearest = (F.normalize(model.features(adv), dim=-1) @ k.T).argmax(-1)
    return float((nearest != gold).float().mean())
