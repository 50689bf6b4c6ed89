"""Real inputs and small real models for the attack tests (no download, built locally)."""

from __future__ import annotations

from functools import lru_cache

import torch
from PIL import Image

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry")


@lru_cache(maxsize=4)
def photos(n: int = 4) -> torch.Tensor:
    """The first n real RGB photos of skimage.data, preprocessed to (n, 3, 224, 224) in [0, 1]."""
    from skimage import data

    from retlink.tools.vision.efficientnet import preprocess

    return torch.stack([preprocess(Image.fromarray(getattr(data, name)())) for name in PHOTOS[:n]])


def tiny_clip(seed: int = 0) -> torch.nn.Module:
    """A randomly initialised open_clip CLIP small enough to attack in milliseconds (32 px ViT)."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=32,
        vision_cfg={"layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 32},
        text_cfg={"context_length": 16, "vocab_size": 200, "width": 32, "heads": 2, "layers": 1},
    )
    return model.eval()


def tiny_captioner(seed: int = 0) -> torch.nn.Module:
    """A randomly initialised transformers VisionEncoderDecoder (ViT + GPT-2), 32 px input."""
    from transformers import GPT2Config, VisionEncoderDecoderModel, ViTConfig

    torch.manual_seed(seed)
    encoder = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    decoder = GPT2Config(
        vocab_size=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=32,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        add_cross_attention=True,
        is_decoder=True,
    )
    from transformers import VisionEncoderDecoderConfig

    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 1, 0, 2
    model = VisionEncoderDecoderModel(config=cfg).eval()
    model.generation_config.decoder_start_token_id = 1
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    return model
