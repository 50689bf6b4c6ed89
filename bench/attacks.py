"""Attack benchmark: image-steps per second of our PGD against torchattacks' PGD.

    .venv/bin/python bench/attacks.py                      # CPU, batch 8, 10 steps, 224 px
    .venv/bin/python bench/attacks.py --device cuda --batch 64 --amp

Goal (issue 6): at least 1.0x torchattacks on CPU, 1.3x on GPU. Both attack the same real
EfficientNet-Lite0 (ImageNet weights) with the same batch of real photos, eps 8/255, alpha 2/255,
random start; runs alternate (ours, theirs, ours, ...) so load from other processes hits both
alike, and the median of `--repeats` timed runs after a warm-up is reported. Success rates are
printed beside the speed: a fast attack that fails is no win. The extra rows show where the
speed comes from: our PGD with the memory layout its auto mode did not pick, torchattacks fed a
channels-last batch, and (CUDA, `--amp`) our PGD with bfloat16 autocast in both layouts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from retlink.attacks import ClassifierTarget, build_attack
from retlink.tools.vision.efficientnet import build_efficientnet_lite, preprocess

console = Console()
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry")


def photo_batch(n: int, device: str) -> torch.Tensor:
    """n real photos (repeated, each copy flipped or shifted so no two are identical) at 224 px."""
    from skimage import data

    base = [preprocess(Image.fromarray(getattr(data, name)())) for name in PHOTOS]
    out = []
    for i in range(n):
        img = base[i % len(base)]
        k = i // len(base)
        out.append(torch.roll(img.flip(-1) if k % 2 else img, shifts=k * 7, dims=-1))
    return torch.stack(out).to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], torch.Tensor], device: str) -> tuple[float, torch.Tensor]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--amp", action="store_true", help="also time our PGD under bf16 autocast (CUDA)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import torchattacks

    device = args.device
    model = build_efficientnet_lite().to(device)
    x = photo_batch(args.batch, device)
    with torch.inference_mode():
        labels = model(x).argmax(1).clone()
    params = {"eps": 8 / 255, "alpha": 2 / 255, "steps": args.steps, "random_start": True}

    ours = build_attack("pgd", ClassifierTarget(model), **params, restarts=1)
    theirs = torchattacks.PGD(model, **params)
    contenders: dict[str, Callable[[], torch.Tensor]] = {
        "retlink PGD": lambda: ours(x, labels),
        "torchattacks PGD": lambda: theirs(x, labels),
    }
    flipped = device != "cpu"  # the layout the auto mode does not pick
    other = build_attack("pgd", ClassifierTarget(model), **params, channels_last=flipped)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    contenders[f"retlink PGD, {'channels-last' if flipped else 'NCHW'} layout"] = lambda: other(x, labels)
    contenders["torchattacks PGD, channels-last input"] = lambda: theirs(x_cl, labels)
    if args.amp and device.startswith("cuda"):
        amp = build_attack("pgd", ClassifierTarget(model), **params, amp=True)
        contenders["retlink PGD, bf16 autocast"] = lambda: amp(x, labels)
        amp_nchw = build_attack("pgd", ClassifierTarget(model), **params, amp=True, channels_last=False)
        contenders["retlink PGD, bf16 autocast, NCHW"] = lambda: amp_nchw(x, labels)

    times: dict[str, list[float]] = {k: [] for k in contenders}
    success: dict[str, float] = {}
    for fn in contenders.values():  # warm-up: allocator, oneDNN/cuDNN plans
        fn()
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            seconds, adv = timed(fn, device)
            times[name].append(seconds)
            with torch.inference_mode():
                success[name] = (model(adv).argmax(1) != labels).float().mean().item()

    work = args.batch * args.steps
    rate = {k: work / statistics.median(v) for k, v in times.items()}
    base = rate["torchattacks PGD"]
    name = (
        torch.cuda.get_device_name()
        if device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads"
    )
    table = Table(
        title=f"PGD eps 8/255, {args.steps} steps, batch {args.batch}, 224 px, EfficientNet-Lite0 ({name})"
    )
    for col in ("attack", "image-steps/s", "vs torchattacks", "success rate", "median s"):
        table.add_column(col, justify="left" if col == "attack" else "right")
    for k in contenders:
        table.add_row(
            k,
            f"{rate[k]:.1f}",
            f"{rate[k] / base:.2f}x",
            f"{success[k]:.2f}",
            f"{statistics.median(times[k]):.3f}",
        )
    console.print(table)
    ratio = rate["retlink PGD"] / base
    goal = 1.3 if device.startswith("cuda") else 1.0
    style = "green" if ratio >= goal else "red"
    console.print(
        f"[{style}]retlink PGD / torchattacks PGD = {ratio:.2f}x (goal {goal:.1f}x on {device})[/{style}]"
    )


if __name__ == "__main__":
    main()
