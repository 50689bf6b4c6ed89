"""Save and reload an attacked image set so it can be shared and reused.

Per image: a lossless PNG (for eyes and for pipelines that read image files) and the exact float
tensor as `.pt`. PNG stores 8 bits per channel, so the PNG is the attacked image *rounded* to the
nearest 1/255: its perturbation differs from the attack's by up to 0.5/255 per pixel and may
even exceed the L-inf budget by that much. The `.pt` is the exact attack output; the manifest
records the norms of both, measured against the clean image, so a reader can see which one held
the budget. A `manifest.json` ties it together: attack name, parameters, seed, and per sample the
files and norms.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from retlink.attacks.attacked import from_uint8, to_uint8
from retlink.attacks.projections import perturbation_norms

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _file_stem(sample_id: str) -> str:
    stem = _SAFE.sub("_", str(sample_id)).strip("._")
    if not stem:
        raise ValueError(f"sample id {sample_id!r} gives an empty file name")
    return stem


def export_attacked(
    out_dir: str | Path,
    clean: torch.Tensor,
    attacked: torch.Tensor,
    sample_ids: Sequence[str],
    *,
    attack: str,
    params: dict[str, Any],
    seed: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write PNG + `.pt` per attacked image and the manifest; returns the manifest's path.

    `clean` and `attacked` are (B, 3, H, W) in [0, 1]; `sample_ids` name the files (made
    filesystem safe, and must stay unique once made safe).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if clean.shape != attacked.shape or clean.dim() != 4 or len(sample_ids) != clean.shape[0]:
        raise ValueError("clean and attacked must be (B, 3, H, W) of the same shape, with B sample ids")
    stems = [_file_stem(s) for s in sample_ids]
    if len(set(stems)) != len(stems):
        raise ValueError("sample ids collide once made file-name safe")
    exact = perturbation_norms(clean, attacked)
    quantised_images = torch.stack([from_uint8(to_uint8(a)) for a in attacked])
    quantised = perturbation_norms(clean, quantised_images)
    samples = []
    for i, (sid, stem) in enumerate(zip(sample_ids, stems, strict=True)):
        Image.fromarray(to_uint8(attacked[i])).save(out / f"{stem}.png", format="PNG", compress_level=6)
        torch.save(attacked[i].detach().float().cpu().contiguous().clone(), out / f"{stem}.pt")
        samples.append(
            {
                "id": str(sid),
                "png": f"{stem}.png",
                "tensor": f"{stem}.pt",
                "shape": list(attacked[i].shape),
                "norms": {k: v[i] for k, v in exact.items()},
                "norms_png": {k: v[i] for k, v in quantised.items()},
            }
        )
    manifest = {
        "attack": attack,
        "params": params,
        "seed": seed,
        "note": "the .pt files are the exact attack outputs; PNGs are rounded to 8 bits (norms_png)",
        **(extra or {}),
        "samples": samples,
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, default=str))
    log.info("exported %d attacked images to %s", len(samples), out)
    return path


def load_attacked(
    out_dir: str | Path, *, exact: bool = True
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read an exported set back: (manifest, {sample id: (3, H, W) tensor}), the exact `.pt`
    tensors by default or the 8-bit PNGs with `exact=False`."""
    out = Path(out_dir)
    manifest = json.loads((out / MANIFEST).read_text())
    images: dict[str, torch.Tensor] = {}
    for s in manifest["samples"]:
        if exact:
            images[s["id"]] = torch.load(out / s["tensor"], map_location="cpu", weights_only=True)
        else:
            with Image.open(out / s["png"]) as img:
                images[s["id"]] = from_uint8(np.asarray(img.convert("RGB")))
    return manifest, images
