"""Does an adversarially fine-tuned image embedder hold image-only retrieval under white-box PGD?

Image-only retrieval (each mention image's nearest KB entity image, cosine of pooled features)
with the packaged weights and with a fine-tuned checkpoint (`retlink train`, `kind: encoder`),
each attacked through its own weights (white box: L-inf PGD, untargeted cross-entropy over all
KB entities, the projection probe's attack with the identity map), on a dataset's test mention
images. Hits@1 with bootstrap CIs and paired differences (tuned minus original).

    python -m retlink.eval.experiments.robust_encoder_probe WEIGHTS [--dataset logos] [--test 100] [--eps 4 8]

The retrieval, the KB features and the attack are `projection_probe`'s (its projection stays
the identity here): one way to measure image-only retrieval under attack.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from retlink.eval.experiments.projection_probe import (
    ProjectedRetrieval,
    attacked,
    hits,
    image_tensor,
    kb_features,
    load_split,
)
from retlink.eval.runs import bootstrap_ci

log = logging.getLogger(__name__)


def _pct(v: np.ndarray, n_resamples: int = 1000) -> list[float]:
    return [
        round(100 * float(v.mean()), 1),
        *[round(100 * c, 1) for c in bootstrap_ci(v, n_resamples=n_resamples)],
    ]


def compare(
    networks: dict[str, torch.nn.Module],
    kb_images: Sequence[torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    eps_list: Sequence[float],
    steps: int,
    seed: int = 0,
) -> dict[str, object]:
    """Hits@1 of each network clean and under PGD at each eps (made on that network)."""
    x, y = test
    rows: dict[str, dict[str, np.ndarray]] = {}
    for name, network in networks.items():
        model = ProjectedRetrieval(network, kb_features(network, kb_images))
        rows[name] = {"clean": hits(model, x, y)}
        for eps in eps_list:
            started = time.perf_counter()
            rows[name][f"pgd-{round(eps * 255)}"] = hits(
                model, attacked(model, x, y, eps=eps, steps=steps, seed=seed), y
            )
            log.info("%s pgd %.0f/255: %.1fs", name, eps * 255, time.perf_counter() - started)
    report: dict[str, object] = {"n_test": len(x), "n_kb": len(kb_images), "steps": steps}
    first, *others = list(networks)
    for cond in rows[first]:
        for name in networks:
            report[f"{name}_{cond}"] = _pct(rows[name][cond])
        for name in others:
            report[f"diff_{name}_{cond}"] = _pct(rows[name][cond] - rows[first][cond], 2000)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    from rich.console import Console

    from retlink.datasets import load_dataset
    from retlink.tools.vision.efficientnet import shared_network
    from retlink.tools.vision.weights import build_tuned, read_weights

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path, help="a fine-tuned checkpoint")
    p.add_argument("--dataset", default="logos")
    p.add_argument("--test", type=int, default=100, help="the first N test samples")
    p.add_argument("--eps", type=float, nargs="+", default=[4, 8], help="budgets in 1/255")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    tuned = build_tuned(args.weights)
    info = read_weights(args.weights)
    networks = {"original": shared_network(tuned.network.value), "tuned": tuned}
    entities = [e for e in load_dataset(args.dataset).entities() if e.image_paths]
    index = {e.id: i for i, e in enumerate(entities)}
    kb_images = [image_tensor(Path(e.image_paths[0])) for e in entities]
    report = compare(
        networks,
        kb_images,
        load_split(args.dataset, "test", args.test, index),
        eps_list=[e / 255 for e in args.eps],
        steps=args.steps,
    )
    report["weights"] = {"weights_sha256": info["weights_sha256"], **info["fingerprint"]}
    Console().print_json(json.dumps(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
