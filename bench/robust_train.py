"""Robust fine-tuning benchmark: the `kind: encoder` training loop against a bare forward+backward
loop over the same network, in the same run.

    PYTHONPATH=src .venv/bin/python bench/robust_train.py                  # CPU, Lite0, FARE and MAT
    PYTHONPATH=src .venv/bin/python bench/robust_train.py --device cuda --batch 64
    PYTHONPATH=src .venv/bin/python bench/robust_train.py --network open_clip --open-clip-model ViT-B-32 \
        --device cuda --last-blocks -1     # an open_clip tower (random weights unless --open-clip-pretrained)

Goal (issue 29): the loop at >= 0.8x the bare loop. A PGD step is a forward and backward pass to
the input, and the weight update is one more (over the trained blocks; the frozen prefix only
forward), so a training step with s PGD steps is s + 1 passes: the loop's pass rate is
images x (s + 1) / second, the bare loop's images / second of one full forward + backward pass
(gradients to every weight and the input), and their ratio is what the loop wastes beyond the
physical limit. An open_clip tower (`retlink.train.towers`) has no frozen-prefix shortcut: its
update runs the whole tower under autograd, so `--last-blocks -1` and a partial one cost alike. The update counts as a full pass although, with frozen early blocks, its backward
stops at the first trained block: with `--last-blocks 3` the loop can pass 1.0x, and
`--last-blocks -1` (the whole network trained) is the like-for-like comparison. Runs alternate (bare, loop, bare, ...) so other processes' load hits both alike;
medians over `--repeats`. Also printed: images x PGD steps per second, peak memory (max RSS on a
CPU, max allocated on CUDA) and the projected minutes of one epoch over the logos KB's images.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from retlink.tools.vision.efficientnet import build_efficientnet_lite
from retlink.train.robust_loop import PGDSettings, SplitEncoder, bare_step, fare_step, mat_step

console = Console()
LOGOS_KB_IMAGES = 1646


def photos(n: int, device: str) -> torch.Tensor:
    """n real photos (scikit-image's samples, flipped or shifted copies) at 224 px."""
    from PIL import Image
    from skimage import data

    from retlink.tools.vision.efficientnet import preprocess

    names = ("chelsea", "astronaut", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry")
    base = [preprocess(Image.fromarray(getattr(data, name)())) for name in names]
    out = [torch.roll(base[i % len(base)].flip(-1) if (i // len(base)) % 2 else base[i % len(base)], i // len(base) * 7, -1) for i in range(n)]
    return torch.stack(out).to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", default="efficientnet_lite0", help="a network of the registry, or open_clip")
    ap.add_argument("--open-clip-model", default="ViT-B-32", help="with --network open_clip")
    ap.add_argument("--open-clip-pretrained", default=None, help="its weights (a local file); random if not given")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="PGD steps per update")
    ap.add_argument("--eps", type=float, default=4 / 255)
    ap.add_argument("--last-blocks", type=int, default=3, help="stages trained; -1: the whole network")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    x = photos(args.batch, dev)
    entities = x.flip(-1)
    gold = torch.arange(args.batch, device=dev)
    generator = torch.Generator(device=dev).manual_seed(0)
    pgd = PGDSettings(args.eps, args.steps, min(args.eps, 2.5 * args.eps / args.steps))

    last = None if args.last_blocks < 0 else args.last_blocks
    if args.network == "open_clip":
        from retlink.train.towers import OpenClipTower, TowerSplit

        def build() -> torch.nn.Module:
            torch.manual_seed(0)
            return OpenClipTower(args.open_clip_model, args.open_clip_pretrained)

        bare, model = build().to(dev).eval(), build().to(dev)
        enc = TowerSplit(model, last)
    else:
        bare, model = build_efficientnet_lite(args.network).to(dev).eval(), build_efficientnet_lite(args.network).to(dev)
        enc = SplitEncoder(model, last, freeze_bn_stats=True)
    for p in bare.parameters():
        p.requires_grad_(True)
    original = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(enc.params, lr=1e-5)

    def bare_run() -> None:
        bare.zero_grad(set_to_none=True)
        bare_step(bare, x)

    def fare_run() -> None:
        with torch.inference_mode():
            target = original.features(x).clone()
        loss = fare_step(enc, x, target, pgd, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def mat_run() -> None:  # no augmented views: the adversarial image and the entity images only
        loss = mat_step(enc, x, [], entities, gold, pgd, 0.07, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    runs = {"bare": bare_run, "fare": fare_run, "mat": mat_run}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in runs.items():
            sync(dev)
            t0 = time.perf_counter()
            fn()
            sync(dev)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    bare_rate = args.batch / med["bare"]
    name = f"open_clip:{args.open_clip_model}" if args.network == "open_clip" else args.network
    table = Table(title=f"{name}, batch {args.batch}, {args.steps} PGD steps, last blocks {args.last_blocks}, "
                        f"{dev}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for col in ("loop", "s / batch", "image passes / s", "images x PGD steps / s", "vs bare", f"min / epoch of {LOGOS_KB_IMAGES}"):
        table.add_column(col)
    table.add_row("bare fwd+bwd", f"{med['bare']:.3f}", f"{bare_rate:.2f}", "-", "1.00x", "-")
    for name in ("fare", "mat"):
        # MAT's passes: s PGD passes on the mentions, then the update over mentions and entities
        passes = args.steps + 1 if name == "fare" else args.steps + 2
        rate = args.batch * passes / med[name]
        table.add_row(
            name, f"{med[name]:.3f}", f"{rate:.2f}", f"{args.batch * args.steps / med[name]:.2f}",
            f"{rate / bare_rate:.2f}x", f"{LOGOS_KB_IMAGES / args.batch * med[name] / 60:.1f}",
        )
    console.print(table)
    console.print(f"peak memory: {peak_mib(dev):.0f} MiB")


if __name__ == "__main__":
    main()
