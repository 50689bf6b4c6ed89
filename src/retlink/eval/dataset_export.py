"""`retlink eval export RUN_DIR`: a run's attacked images as a dataset others can evaluate on.

Per set of attacked images (an attack; `attack: adaptive` has one per variant, `NAME/VARIANT`),
one folder holding what `retlink.eval.export.export_attacked` writes (PNG + exact
`.pt` tensor per image, `manifest.json` with the attack, its parameters, seed and measured norms)
plus the original annotations:
- `annotations.jsonl`: every field of the source `Sample` (gold, mention, context, split, bbox,
  where it came from; a multimodal attack's edited sentence as `context`), `image` pointing at
  the attacked PNG and `source_image` at the original;
- `examples.jsonl` and `entities.jsonl` in retlink's own dataset layout (the `demo` loader's), so
  `load_dataset("demo", root=EXPORT/ATTACK)` evaluates on the attacked set directly. The
  entities' image paths are made relative to the export folder and point at the source dataset's
  KB images, which are not copied (for the published datasets they are tens of GB).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from retlink.attacks.attacked import AttackedStore, clean_tensor, file_stem
from retlink.core.errors import ConfigError
from retlink.eval.config import EvalConfig
from retlink.eval.variants import attack_variants

log = logging.getLogger(__name__)


def _raw_id(sample: Any) -> str:
    """The record's own id (loaders prefix `dataset:`)."""
    prefix = f"{sample.dataset}:"
    return sample.id[len(prefix) :] if sample.dataset and sample.id.startswith(prefix) else sample.id


def export_run(run_dir: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write every attack's images and annotations; returns {attack: folder}."""
    from retlink.datasets import load_dataset
    from retlink.eval.export import export_attacked
    from retlink.eval.report import load_run

    run_dir = Path(run_dir)
    cfg: EvalConfig
    cfg, meta, _ = load_run(run_dir)
    out = Path(out) if out is not None else run_dir / "export"
    ds = load_dataset(cfg.dataset.key, cfg.dataset.root, **cfg.dataset.options)
    wanted = set(meta.get("samples", []))
    samples = [s for s in ds.samples(cfg.dataset.split) if s.id in wanted]
    written: dict[str, Path] = {}
    stores = {v.store: v.spec for a in cfg.attacks for v in attack_variants(cfg, a).values()}
    for folder_name, spec in stores.items():  # one per set of images (adaptive: one per variant)
        index = [a.name for a in cfg.attacks].index(spec.name)
        store = AttackedStore(run_dir, folder_name)
        have = [s for s in samples if store.has(s.id)]
        if not have:
            continue
        folder = out / folder_name
        clean = torch.stack([clean_tensor(s.image_path, cfg.image_size) for s in have])
        loaded = [store.load(s.id) for s in have]
        attacked = torch.stack([t for t, _ in loaded])
        export_attacked(
            folder,
            clean,
            attacked,
            [file_stem(s.id) for s in have],
            attack=spec.attack,
            params={**spec.resolved_params(), **spec.params},
            seed=cfg.seed,
            extra={
                "name": folder_name,
                "target": spec.target,
                "surrogate": spec.surrogate,
                "dataset": cfg.dataset.model_dump(mode="json"),
                "image_size": cfg.image_size,
                "run": meta.get("fingerprint"),
                "attack_index": index,
                "sample_ids": {file_stem(s.id): s.id for s in have},
                "distractors": {s.id: m.get("distractor") for s, (_, m) in zip(have, loaded, strict=True)},
            },
        )
        with (folder / "annotations.jsonl").open("w") as ann, (folder / "examples.jsonl").open("w") as ex:
            for s, (_, meta) in zip(have, loaded, strict=True):
                s = s.model_copy(update={"context": meta["context"]}) if "context" in meta else s
                png = f"{file_stem(s.id)}.png"
                rec = json.loads(s.model_dump_json())
                ann.write(json.dumps({**rec, "image": png, "source_image": rec.pop("image_path")}) + "\n")
                ex.write(
                    json.dumps(
                        {"id": _raw_id(s), "image": png, "mention": s.mention, "context": s.context, "gold": s.gold_id}
                    )
                    + "\n"
                )
        with (folder / "entities.jsonl").open("w") as fh:
            for e in ds.entities():
                rel = [os.path.relpath(p, folder.resolve()) for p in e.image_paths]
                fh.write(e.model_copy(update={"image_paths": rel}).model_dump_json() + "\n")
        log.info("exported %d images of %s to %s", len(have), folder_name, folder)
        written[folder_name] = folder
    if not written:
        raise ConfigError(f"{run_dir} holds no attacked images to export (run it first)")
    return written
