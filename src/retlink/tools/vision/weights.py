"""Fine-tuned image weights (`retlink train` with `kind: encoder`): one file, its fingerprint inside.

A checkpoint is what the trainer saves and what the image embedder (`embedder.image_weights`) and
an attack surrogate (`pretrained:` beside a network surrogate) load. It carries:

- `network`: the base network's config name (`retlink.core.networks`) and `arch_kwargs`, the
  timm arguments the architecture was built with ({} for the real networks; tests build tiny
  ones), so loading needs nothing but the file;
- `fingerprint`: how it was made (objective, data fingerprint, eps, PGD steps, ...);
- `weights_sha256`: a hash of every tensor of the state dict, checked on load, so a KB or a
  report can name the exact weights (`short_id`) and a renamed or edited file cannot pass for
  another.

Written atomically (`retlink.tools.atomic`): an interrupted save leaves the previous file or
none, never half of one.
"""

from __future__ import annotations

import hashlib
import io
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from retlink.core.errors import ConfigError
from retlink.core.networks import network
from retlink.tools.atomic import write_atomic

FORMAT = "retlink-image-weights/1"
#: how many hex digits of the weights hash name them (in KB manifests, embedder names, reports)
SHORT = 16


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in the state dict's order."""
    h = hashlib.sha256()
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def short_id(sha256: str) -> str:
    """The name weights go by in embedder names and reports."""
    return sha256[:SHORT]


def weights_id(network_name: str, weights: str | Path | None) -> str:
    """A network and its weights as one string: `efficientnet_lite0`, or
    `efficientnet_lite0@<short hash>` for fine-tuned weights (the hash the checkpoint records; its
    path when it cannot be read). Reports and captions name a role's network by it."""
    if weights is None:
        return str(network_name)
    try:
        return f"{network_name}@{short_id(weights_info(weights)['weights_sha256'])}"
    except ConfigError:
        return f"{network_name}@{weights}"


def save_weights(
    path: Path, model: torch.nn.Module, fingerprint: dict[str, Any], arch_kwargs: dict[str, Any] | None = None
) -> str:
    """Write a wrapped network's weights (an `EfficientNetLite`, or an open_clip tower's whole
    CLIP: `retlink.train.towers`) with their fingerprint; the hash."""
    state = {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()}
    digest = weights_sha256(state)
    payload = {
        "format": FORMAT,
        "network": str(getattr(model, "network_label", None) or model.network.value),
        "arch_kwargs": dict(arch_kwargs or {}),
        "fingerprint": dict(fingerprint),
        "weights_sha256": digest,
        "state_dict": state,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_atomic(Path(path), lambda fh: fh.write(buf.getvalue()))
    return digest


def read_weights(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, its hash verified; ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"image weights not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn, foreign or non-torch file: one clear line
        raise ConfigError(
            f"image weights {path} are not a readable checkpoint: {e.__class__.__name__}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(
            f"{path} is not a retlink image-weights file (made by `retlink train` with kind: encoder)"
        )
    if weights_sha256(payload["state_dict"]) != payload.get("weights_sha256"):
        raise ConfigError(
            f"image weights {path}: the tensors do not match the hash the file records (edited or corrupt)"
        )
    return payload


def weights_info(path: str | Path) -> dict[str, Any]:
    """What a KB manifest or a report records about a checkpoint: everything but the tensors."""
    payload = read_weights(path)
    return {k: v for k, v in payload.items() if k not in ("state_dict", "format")}


def build_tuned(path: str | Path, device: str = "cpu", expect_network: str | None = None) -> torch.nn.Module:
    """The wrapped network (`EfficientNetLite`, eval mode, frozen) with the checkpoint's weights.
    `expect_network`: refuse a checkpoint of another base network (a config naming both)."""
    import timm

    from retlink.core.networks import NETWORKS
    from retlink.tools.vision.efficientnet import EfficientNetLite

    payload = read_weights(path)
    name = network(payload["network"])
    if expect_network is not None and network(expect_network) != name:
        raise ConfigError(
            f"image weights {path} are fine-tuned from {name.value}, not {network(expect_network).value}"
        )
    net = timm.create_model(NETWORKS[name].architecture, pretrained=False, **payload["arch_kwargs"])
    net.load_state_dict(payload["state_dict"])
    model = EfficientNetLite(net, name).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    model.weights_sha256 = payload["weights_sha256"]
    return model


_LOCK = threading.Lock()


def shared_tuned(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """One instance per (file, its hash, device): a checkpoint rewritten in place loads again."""
    resolved = Path(path).resolve()
    stamp = resolved.stat().st_mtime_ns if resolved.exists() else 0
    return _shared(str(resolved), stamp, str(device))


@lru_cache(maxsize=4)
def _shared(path: str, stamp: int, device: str) -> torch.nn.Module:
    del stamp  # part of the cache key only
    with _LOCK:
        return build_tuned(path, device)


def network_with_weights(name: str, weights: str | Path | None = None, device: str = "cpu") -> torch.nn.Module:
    """The shared network a classifier role runs (`captioner.vision_model` with
    `captioner.image_weights`, `defence.detector.model` with its `image_weights`): the packaged
    weights, or a checkpoint fine-tuned from that very network (one of another is refused, so a
    config cannot put Lite1 weights on a role it says runs Lite0)."""
    if weights is None:
        from retlink.tools.vision.efficientnet import shared_network

        return shared_network(name, device)
    model = shared_tuned(weights, device)
    if model.network != network(name):
        raise ConfigError(f"image weights {weights} are fine-tuned from {model.network.value}, not {network(name).value}")
    return model


def open_clip_id(model: str, pretrained: str | Path | None) -> str:
    """An open_clip tower as one string, as the KB manifest, the reports and `weights_id` name
    encoders: `open_clip:MODEL`, or `open_clip:MODEL@<short hash>` when `pretrained` is a retlink
    checkpoint (`retlink train`, `network: open_clip`), so a KB embedded with other weights is
    refused and an attack on other weights is a transfer. A checkpoint of another model is refused;
    open_clip's own weight files and tags keep the plain name."""
    if pretrained is None or not Path(pretrained).expanduser().is_file():
        return f"open_clip:{model}"
    path = Path(pretrained).expanduser().resolve()
    return _open_clip_id(model, str(path), path.stat().st_mtime_ns)  # read once while unchanged


@lru_cache(maxsize=16)
def _open_clip_id(model: str, path: str, stamp: int) -> str:
    del stamp  # part of the cache key only
    name = f"open_clip:{model}"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file read here: open_clip's own loader will say why
        return name
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        return name
    if payload.get("network") != name:
        raise ConfigError(f"image weights {path} are fine-tuned from {payload.get('network')}, not {name}")
    if weights_sha256(payload["state_dict"]) != payload.get("weights_sha256"):
        raise ConfigError(f"image weights {path}: the tensors do not match the hash the file records (edited or corrupt)")
    return f"{name}@{short_id(payload['weights_sha256'])}"
