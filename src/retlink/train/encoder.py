"""`retlink train CONFIG` with `kind: encoder`: adversarially fine-tune the image embedder.

One loop (`robust_loop`), two objectives: `fare` (unsupervised, on a dataset's KB entity images
and optionally a split's mention images) and `mat` (supervised: a split's mention images against
their gold entities' KB images, InfoNCE over in-batch negatives, adversarial mention images plus
augmented views made by the attack library's `augment`). Data comes from the dataset registry
(`retlink.datasets`), networks from `retlink.core.networks`, or an open_clip image tower
(`network: open_clip`, `retlink.train.towers`). The text embedder is not touched: the MAT loss
here is image to image.

The checkpoint (`retlink.tools.vision.weights`) carries its fingerprint: base network (and base
checkpoint), objective, the data's fingerprint, eps, steps and the rest of the recipe. It is
written once, atomically, at the end: an interrupted run (Ctrl-C) leaves no file, or the old one.
Select it with `embedder: {image_weights: PATH}` in an agent config (an open_clip tower's:
`open_clip_pretrained: PATH`), and rebuild the KB with that config (`retlink kb build`); as an
attack surrogate, `pretrained: PATH` beside the network.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BeforeValidator, Field, model_validator

from retlink.attacks.spec import Budget
from retlink.core.config import StrictModel, read_yaml, validate_config
from retlink.core.errors import DatasetError
from retlink.core.networks import DEFAULT_NETWORK, ImageNetwork, canonical
from retlink.core.types import NIL
from retlink.eval.config import DatasetSpec

log = logging.getLogger(__name__)

#: the open_clip image tower (`open_clip_model`, `open_clip_pretrained`), beside the networks
OPEN_CLIP = "open_clip"


def _network(v: Any) -> Any:
    return v if v == OPEN_CLIP else canonical(v)


Network = Annotated[ImageNetwork | Literal["open_clip"], BeforeValidator(_network)]


class EncoderTrainConfig(StrictModel):
    """What `retlink train` reads for `kind: encoder`."""

    kind: Literal["encoder"]
    #: `fare`: unsupervised, features under attack pulled to the original's clean ones;
    #: `mat`: supervised InfoNCE between (adversarial, augmented) mention images and gold KB images
    objective: Literal["fare", "mat"]
    #: the base network (`retlink.core.networks`), its packaged weights unless `base` is given;
    #: or `open_clip`: the image tower of `open_clip_model` (`retlink.train.towers`)
    network: Network = DEFAULT_NETWORK
    #: start from a checkpoint of that network instead (a previous fine-tune; EfficientNet only)
    base: Path | None = None
    #: network open_clip: the model config name, as `embedder.open_clip_model`
    open_clip_model: str = "ViT-B-32"
    #: network open_clip: its starting weights, as `embedder.open_clip_pretrained` (a local file,
    #: a previous fine-tune included; or a tag / hub id where the hub is reachable); None builds
    #: random weights (tests)
    open_clip_pretrained: str | None = None
    #: the data, from the dataset registry
    dataset: DatasetSpec
    #: FARE: train on the dataset's KB entity images (what its KB embeds)
    kb_images: bool = True
    #: FARE: add this split's mention images; MAT: the split it trains on (never the test split
    #: it is reported on)
    split: str | None = None
    #: where the checkpoint goes (relative to this file)
    out: Path
    eps: Budget = Field(4 / 255, gt=0, le=64 / 255)
    steps: int = Field(2, ge=1, le=100)
    #: PGD's step; default 2.5 eps / steps (Madry et al.), at most eps
    step_size: Budget | None = Field(None, gt=0)
    epochs: int = Field(1, ge=1, le=1000)
    #: stop after this many weight updates (across epochs)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=2, le=512)
    lr: float = Field(1e-4, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    #: the stages of the network trained (with the head convolution); null: the whole network
    train_last_blocks: int | None = Field(3, ge=0, le=16)
    #: batch-norm running statistics kept as they are (the affine weights still train)
    freeze_bn_stats: bool = True
    #: MAT: augmented (non-adversarial) views per mention image, the one-to-many augmentation
    views: int = Field(1, ge=0, le=8)
    augment_preset: Literal["normal", "strong"] = "normal"
    temperature: float = Field(0.07, gt=0, le=10)
    #: images are preprocessed to this size (224, what the embedder uses; tests use less)
    image_size: int = Field(224, ge=32, le=512)
    #: the first N images (FARE) or samples (MAT) only
    limit: int | None = Field(None, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> EncoderTrainConfig:
        if self.objective == "mat" and self.split is None:
            raise ValueError("split: MAT trains on a split's samples (e.g. train); name it")
        if self.objective == "fare" and not self.kb_images and self.split is None:
            raise ValueError("kb_images is false and no split: FARE has no images to train on")
        if self.split == "test":
            raise ValueError("split: test is what results are reported on; train on train or dev")
        if self.step_size is not None and self.step_size > self.eps:
            raise ValueError("step_size: larger than eps")
        if self.network == OPEN_CLIP and self.base is not None:
            raise ValueError("base is for the EfficientNet networks; an open_clip tower starts from open_clip_pretrained")
        if self.network == OPEN_CLIP and not self.freeze_bn_stats:
            raise ValueError("freeze_bn_stats: an open_clip ViT tower has no batch norm")
        return self

    @property
    def network_label(self) -> str:
        """The network as the checkpoint records it (`efficientnet_lite0`, `open_clip:ViT-B-32`)."""
        return f"open_clip:{self.open_clip_model}" if self.network == OPEN_CLIP else self.network.value

    @property
    def pgd_step(self) -> float:
        return self.step_size if self.step_size is not None else min(self.eps, 2.5 * self.eps / self.steps)


def load_encoder_config(source: str | Path | dict[str, Any]) -> EncoderTrainConfig:
    """Validated completely before anything loads."""
    if isinstance(source, dict):
        return validate_config(EncoderTrainConfig, source, "dict")
    path = Path(source)
    return validate_config(EncoderTrainConfig, read_yaml(path, {"out", "base", "root"}), str(path))


# -- data ------------------------------------------------------------------------------------


def training_items(cfg: EncoderTrainConfig) -> list[tuple[str, str | None]]:
    """(image path, gold entity image path) pairs: FARE's have no gold (None), MAT's have one."""
    from retlink.datasets import load_dataset

    ds = load_dataset(cfg.dataset.key, cfg.dataset.root, **cfg.dataset.options)
    entity_image = {e.id: e.image_paths[0] for e in ds.entities() if e.image_paths}
    items: list[tuple[str, str | None]] = []
    if cfg.objective == "fare" and cfg.kb_images:
        items += [(p, None) for p in entity_image.values()]
    if cfg.split is not None:
        if cfg.split not in ds.splits:
            raise DatasetError(f"dataset {cfg.dataset.key!r} has no split {cfg.split!r} (splits: {', '.join(ds.splits)})")
        for s in ds.samples(cfg.split):
            if s.image_path is None:
                continue
            if cfg.objective == "fare":
                items.append((str(s.image_path), None))
            elif s.gold_id != NIL and s.gold_id in entity_image:
                items.append((str(s.image_path), entity_image[s.gold_id]))
    if cfg.limit is not None:
        items = items[: cfg.limit]
    if len(items) < 2:
        raise DatasetError(f"{len(items)} usable training image(s) in {cfg.dataset.key!r}; at least 2 are needed")
    return items


def data_fingerprint(items: list[tuple[str, str | None]]) -> str:
    """sha256 over every training image's bytes (and its pairing), in order."""
    h = hashlib.sha256()
    cache: dict[str, str] = {}
    for path, gold in items:
        for p in (path, gold):
            if p is None:
                h.update(b"-")
                continue
            if p not in cache:
                cache[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            h.update(cache[p].encode())
    return h.hexdigest()


def load_batch(paths: list[str], size: int) -> torch.Tensor:
    from PIL import Image

    from retlink.tools.vision.efficientnet import preprocess

    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(preprocess(im.convert("RGB"), size))
    return torch.stack(out)


# -- the run ---------------------------------------------------------------------------------


def base_model(cfg: EncoderTrainConfig) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """(the network to tune, its timm arguments, what it started from)."""
    if cfg.network == OPEN_CLIP:
        from retlink.train.towers import OpenClipTower

        pretrained = cfg.open_clip_pretrained
        return OpenClipTower(cfg.open_clip_model, pretrained), {}, _started_from(pretrained)
    if cfg.base is None:
        from retlink.tools.vision.efficientnet import build_efficientnet_lite

        return build_efficientnet_lite(cfg.network), {}, "packaged"
    from retlink.tools.vision.weights import build_tuned, read_weights

    payload = read_weights(cfg.base)
    return build_tuned(cfg.base, expect_network=cfg.network), payload["arch_kwargs"], payload["weights_sha256"]


def _started_from(pretrained: str | None) -> str:
    """An open_clip tower's starting point as the fingerprint records it: the weights hash of a
    local file (a retlink checkpoint's own, else the file's), else the tag or "random"."""
    if pretrained is None:
        return "random"
    path = Path(pretrained).expanduser()
    if not path.is_file():
        return pretrained
    from retlink.core.errors import ConfigError
    from retlink.tools.vision.weights import weights_info

    try:
        return weights_info(path)["weights_sha256"]
    except ConfigError:
        return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(cfg: EncoderTrainConfig, data_sha: str, n_images: int, started_from: str) -> dict[str, Any]:
    """How the weights were made (what the checkpoint carries)."""
    return {
        "network": cfg.network_label,
        "base": started_from,
        "objective": cfg.objective,
        "dataset": cfg.dataset.key,
        "split": cfg.split,
        "kb_images": cfg.kb_images if cfg.objective == "fare" else False,
        "images": n_images,
        "data_sha256": data_sha,
        "eps": cfg.eps,
        "steps": cfg.steps,
        "step_size": cfg.pgd_step,
        "epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "train_last_blocks": cfg.train_last_blocks,
        "freeze_bn_stats": cfg.freeze_bn_stats,
        "views": cfg.views if cfg.objective == "mat" else 0,
        "image_size": cfg.image_size,
        "seed": cfg.seed,
    }


def _batches(items: list[tuple[str, str | None]], size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches; a MAT batch never holds two mentions of one entity (a false negative)."""
    pending = torch.randperm(len(items), generator=generator).tolist()
    batches: list[list[int]] = []
    while len(pending) >= 2:
        batch, used, rest = [], set(), []
        for i in pending:
            gold = items[i][1]
            if len(batch) < size and (gold is None or gold not in used):
                batch.append(i)
                used.add(gold)
            else:
                rest.append(i)
        if len(batch) < 2:  # what is left all shares one entity: no negatives to learn from
            break
        batches.append(batch)
        pending = rest
    return batches


def train_encoder(source: str | Path | dict[str, Any], *, progress: bool = True, console: Any = None) -> dict[str, Any]:
    """Fine-tune, write the checkpoint, return what happened (path, hash, steps, losses, time)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from retlink.attacks.augment import Augment
    from retlink.tools.vision.weights import save_weights
    from retlink.train.robust_loop import PGDSettings, SplitEncoder, fare_step, mat_step

    cfg = load_encoder_config(source)
    items = training_items(cfg)
    data_sha = data_fingerprint(items)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model, arch_kwargs, started_from = base_model(cfg)
    original = None
    if cfg.objective == "fare":
        import copy

        original = copy.deepcopy(model).eval()  # f_orig: the clean features stay the anchor
    if cfg.network == OPEN_CLIP:
        from retlink.train.towers import TowerSplit

        enc = TowerSplit(model, cfg.train_last_blocks)
    else:
        enc = SplitEncoder(model, cfg.train_last_blocks, cfg.freeze_bn_stats)
    opt = torch.optim.AdamW(enc.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    pgd = PGDSettings(cfg.eps, cfg.steps, cfg.pgd_step)
    augment = None
    if cfg.objective == "mat" and cfg.views:
        from retlink.attacks.targets import EmbeddingAwayTarget

        # the attack library's view making; `augment` ignores its target's gradient (any will do)
        augment = Augment(EmbeddingAwayTarget(model), seed=cfg.seed, **Augment.presets[cfg.augment_preset])
    epochs = [_batches(items, cfg.batch_size, generator) for _ in range(cfg.epochs)]
    total = sum(len(b) for b in epochs)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    losses: list[float] = []
    started = time.perf_counter()
    columns = (TextColumn(f"[bold]{cfg.objective}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("train", total=total, loss="-")
        for batches in epochs:
            for batch in batches:
                if len(losses) >= total:
                    break
                x = load_batch([items[i][0] for i in batch], cfg.image_size)
                if cfg.objective == "fare":
                    with torch.inference_mode():
                        target = original.features(x).clone()
                    loss = fare_step(enc, x, target, pgd, generator)
                else:
                    golds = list(dict.fromkeys(items[i][1] for i in batch))
                    entities = load_batch(golds, cfg.image_size)
                    gold = torch.tensor([golds.index(items[i][1]) for i in batch])
                    views = [augment.perturb(x, None, generator) for _ in range(cfg.views)] if augment else []
                    loss = mat_step(enc, x, views, entities, gold, pgd, cfg.temperature, generator)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                bar.update(task, advance=1, loss=f"{losses[-1]:.4f}")
    seconds = time.perf_counter() - started
    model.eval()
    fp = fingerprint(cfg, data_sha, len(items), started_from)
    digest = save_weights(cfg.out, model, fp, arch_kwargs)
    log.info("wrote %s (%s, %d steps in %.1fs)", cfg.out, digest[:16], len(losses), seconds)
    return {
        "path": str(cfg.out),
        "weights_sha256": digest,
        "fingerprint": fp,
        "updates": len(losses),
        "images": len(items),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "seconds": round(seconds, 2),
    }
