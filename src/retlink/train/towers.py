"""An open_clip image tower as the network the robust loop tunes (`network: open_clip` in an
encoder config), beside the EfficientNet-Lite networks of `robust_loop.SplitEncoder`.

The loop's objectives only need `features` of [0, 1] images and a trainable parameter list, so
a ViT tower plugs in through the same interface (`prefix`, `suffix`, `attack_mode`,
`train_mode`, `params`). Two differences from the EfficientNet split, both deliberate:

- no frozen-prefix shortcut: the weight step runs the whole tower under autograd (the frozen
  blocks simply get no gradient). Cutting a ViT between residual blocks means re-implementing its
  forward (class token, positional embedding, patch dropout), which changes between open_clip
  versions; a GPU, where a ViT tower is worth tuning, does not need the saving.
- no batch-norm statistics: a ViT has layer norms only, so `freeze_bn_stats` has nothing to do.

The whole CLIP model is saved (`retlink.tools.vision.weights.save_weights`), text tower included,
so the checkpoint is what open_clip itself loads as `pretrained` (`embedder.open_clip_pretrained`,
an attack's `pretrained` beside `surrogate: open_clip:MODEL`).
"""

from __future__ import annotations

import torch
from torch import nn

from retlink.attacks.targets import OpenClipImageEncoder


class OpenClipTower(nn.Module):
    """An open_clip CLIP whose `features` are the unit image embeddings of [0, 1] images (resized
    and normalised inside, as the pipelines and attacks see them)."""

    def __init__(self, model: str, pretrained: str | None = None) -> None:
        super().__init__()
        import open_clip

        self.net = open_clip.create_model(model, pretrained=pretrained)
        self.encoder = OpenClipImageEncoder(self.net)
        #: what the checkpoint records as its network (`open_clip:MODEL`)
        self.network_label = f"open_clip:{model}"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class TowerSplit:
    """The `SplitEncoder` interface over an `OpenClipTower`: the last `last_blocks` residual
    blocks, the final layer norm and the projection train (None: the whole image tower); the
    text tower never does."""

    def __init__(self, model: OpenClipTower, last_blocks: int | None) -> None:
        self.model = model
        visual = model.net.visual
        blocks = list(visual.transformer.resblocks)
        for p in model.parameters():
            p.requires_grad_(False)
        if last_blocks is None:
            self.params = list(visual.parameters())
        else:
            trained: list[nn.Parameter] = [p for b in blocks[max(0, len(blocks) - last_blocks) :] for p in b.parameters()]
            trained += list(visual.ln_post.parameters())
            if isinstance(getattr(visual, "proj", None), nn.Parameter):
                trained.append(visual.proj)
            self.params = trained
        for p in self.params:
            p.requires_grad_(True)

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.features(h)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)

    def attack_mode(self) -> None:
        self.model.eval()

    def train_mode(self) -> None:
        """Eval mode still: open_clip's towers carry no dropout by default, and a patch dropout
        configured for pre-training must not thin the weight step's view of the images."""
        self.model.eval()
