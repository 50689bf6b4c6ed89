"""Attacked MATE scenes: the eval module's image attacks on the rendered PNGs, stored the way
`retlink eval run` stores its attacked images (`retlink.attacks.attacked`: `AttackedStore`, fixed
chunks with resume-safe seeds, measured norms), one image per scene shared by every question,
model and prompt of the run.

What an attack can aim at. The binding agent's perception (`retlink.mate.scene_parse`)
has no network: it thresholds each pixel against a ground model, labels connected components,
votes on hues and matches silhouettes rendered from the text. There is no gradient to follow,
so two honest attacks exist:
- `target: perception` (with `attack: square`, or noise): a score-based black-box attack on the
  agent's own perception. `PerceptionTarget` runs the agent's segmentation and silhouette match
  (the same functions its graph calls) on each query and scores how much of the scene it now
  reads differently from the clean image: objects whose colour or shape reading changed or that
  lost their link, plus the drop in link overlap and colour confidence as the continuous part the
  random search climbs. It is question-agnostic (one image a scene), knows the scene's JSON (it
  is public, in the prompt), and queries perception only, never the answer.
- `target: embedding_away` / `classifier` on a network of the registry (`surrogate:`): a
  transfer attack (PGD, APGD, FGSM, CW) crafted on EfficientNet-Lite0 features at the scene's
  own resolution. Neither the binding agent nor a served VLM uses that network, so these images
  test whether generic adversarial perturbations transfer; they are the images sent to a VLM.

Attacked images reach the models as PNG (`attacked_png`), 8-bit like the clean scenes, so the
measured `norms_png` are what each model saw.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from retlink.attacks.attacked import AttackedStore, file_stem, make_chunk
from retlink.attacks.targets import Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneSample:
    """One scene to attack, as `make_chunk` wants a sample: an id and an image path."""

    id: str
    image_path: Path
    text_path: Path
    gold_id: str | None = None


def scene_samples(data: Any, questions: Iterable[Any]) -> list[SceneSample]:
    """The distinct scenes of `questions`, in order (the chunks attack these)."""
    seen: dict[str, SceneSample] = {}
    for q in questions:
        if q.scene not in seen:
            png = data.image_path(q)
            seen[q.scene] = SceneSample(q.scene, png, png.with_suffix(".json"))
    return list(seen.values())


class SceneParser(nn.Module):
    """The binding agent's perception as the module an attack freezes: it has no parameters and
    no gradient; `PerceptionTarget` queries it."""

    def __init__(self, camera: Any) -> None:
        super().__init__()
        self.camera = camera

    def read(self, image: torch.Tensor, hyps: list[Any], n_objects: int) -> dict[str, Any]:
        """The scene as the agent perceives it from a (3, H, W) image in [0, 1], rounded to 8 bits
        as the PNG it would read: per text object (colour, shape) or None when unlinked."""
        from retlink.mate.agent.nodes import match
        from retlink.mate.scene_parse import segment

        arr = image.detach().float().clamp(0, 1).mul(255).round().permute(1, 2, 0).cpu().numpy().astype(np.float64) / 255.0
        regions = segment(arr)
        links, shapes, mean_iou = match(regions, hyps, n_objects)
        by_object: list[tuple[str, str] | None] = [None] * n_objects
        confidence = []
        for i, j in links.items():
            by_object[j] = (regions[i].color, shapes[i])
            confidence.append(regions[i].color_confidence)
        return {"objects": by_object, "mean_iou": mean_iou, "confidence": float(np.mean(confidence)) if confidence else 0.0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("the scene parser has no gradient; attack it through PerceptionTarget (score-based)")


class PerceptionTarget(Target):
    """Score-based target on the binding agent's perception. Labels: each scene's JSON text.

    loss = share of text objects read differently from the clean image (colour, shape, or link
    lost) + (1 - mean link overlap) / 2 + (1 - mean colour confidence) / 2; success once any
    object is read differently."""

    def __init__(self, camera: Any) -> None:
        super().__init__(SceneParser(camera))

    def prepare(self, x: torch.Tensor, y: Any) -> list[dict[str, Any]]:
        from retlink.mate.agent.nodes import hypotheses, scene_objects

        if y is None or len(y) != x.shape[0]:
            raise ValueError("PerceptionTarget needs each scene's JSON text as its label")
        out = []
        for image, text in zip(x, y, strict=True):
            objects = scene_objects(text)
            hyps = hypotheses(objects, self.model.camera)
            out.append({"hyps": hyps, "n": len(objects), "clean": self.model.read(image, hyps, len(objects))})
        return out

    def loss_and_success(self, x: torch.Tensor, y: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        losses, success = [], []
        for image, label in zip(x, y, strict=True):
            now = self.model.read(image, label["hyps"], label["n"])
            changed = sum(a is None or a != b for a, b in zip(now["objects"], label["clean"]["objects"], strict=True))
            losses.append(changed / max(label["n"], 1) + (1 - now["mean_iou"]) / 2 + (1 - now["confidence"]) / 2)
            success.append(changed > 0)
        return torch.tensor(losses, dtype=torch.float32), torch.tensor(success, dtype=torch.bool)


def make_images(
    run_dir: Path,
    spec: Any,
    attack_index: int,
    scenes: Sequence[SceneSample],
    needed: set[str],
    camera: Any,
    *,
    seed: int,
) -> int:
    """Make the attacked images of `spec` for the chunks of `scenes` holding a needed scene not
    stored yet (the runner's rule: fixed chunks, so a resumed run remakes the same images)."""
    store = AttackedStore(run_dir, spec.name)
    target = PerceptionTarget(camera) if spec.target == "perception" else None
    label_of = (lambda s: s.text_path.read_text()) if target is not None else None
    made = 0
    for chunk, start in enumerate(range(0, len(scenes), spec.batch_size)):
        part = scenes[start : start + spec.batch_size]
        if all(store.has(s.id) or s.id not in needed for s in part):
            continue
        n = make_chunk(spec, attack_index, chunk, part, store, None, seed=seed, size=None, target=target, label_of=label_of)
        log.info("%s: chunk %d, %d images made", spec.name, chunk, n)
        made += n
    return made


def attacked_png(store: AttackedStore, scene_id: str) -> Path:
    """The stored attacked image of a scene as the PNG a model reads (written once, atomically)."""
    from PIL import Image

    from retlink.attacks.attacked import to_uint8

    path = store.dir / f"{file_stem(scene_id)}.png"
    if not path.exists():
        image, _ = store.load(scene_id)
        tmp = store.dir / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
        os.replace(tmp, path)
    return path
