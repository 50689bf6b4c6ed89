"""The embedding and captioner targets on small real models built locally (open_clip CLIP,
transformers VisionEncoderDecoder): the attacks raise exactly the loss each target defines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_helpers import photos, tiny_captioner, tiny_clip

from retlink.attacks import (
    CaptionerTarget,
    ClassifierTarget,
    EmbeddingAwayTarget,
    OpenClipImageEncoder,
    TextAlignmentTarget,
    ZeroShotClassifier,
    build_attack,
)


@pytest.fixture(scope="module")
def encoder() -> OpenClipImageEncoder:
    return OpenClipImageEncoder(tiny_clip())


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return photos(3)


def test_away_from_clean_embedding(encoder, images):
    target = EmbeddingAwayTarget(encoder)
    adv = build_attack("pgd", target, steps=5)(images)
    clean = target.prepare(images, None)
    assert torch.allclose(target.loss(images, clean), torch.zeros(3), atol=1e-5)
    assert (target.loss(adv, clean) > 0.01).all()
    assert (adv - images).abs().max() <= 8 / 255 + 1e-6
    assert all(p.grad is None for p in encoder.parameters())


def test_away_from_correct_toward_wrong_text(encoder, images):
    texts = F.normalize(torch.randn(2, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    with torch.no_grad():
        img = encoder(images)
    # per sample: the better-aligned text is "correct", the other the chosen wrong entity
    correct = (img @ texts.T).argmax(1)
    pair = torch.stack([texts[correct], texts[1 - correct]], dim=1)  # (B, 2, D)
    target = TextAlignmentTarget(encoder)
    adv = build_attack("pgd", target, preset="strong", steps=10, restarts=1)(images, pair)
    before, after = target.loss(images, pair), target.loss(adv, pair)
    assert (before < 0).all() and (after > before).all()
    assert (after > 0).float().mean() >= 2 / 3, "most images should end closer to the wrong entity"
    # away-only variant: (B, D) labels lower the similarity to the correct text
    away = build_attack("pgd_l2", target, steps=5)(images, pair[:, 0])
    assert (target.loss(away, pair[:, 0]) > target.loss(images, pair[:, 0])).all()


def test_zero_shot_classifier_supports_dlr_and_cw(encoder, images):
    texts = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    target = ClassifierTarget(ZeroShotClassifier(encoder, texts))
    labels = target.prepare(images, None)
    adv = build_attack("apgd", target, preset="strong", steps=8, restarts=1)(images, labels)  # DLR, 16/255
    with torch.no_grad():
        assert (target.model(adv).argmax(1) != labels).float().mean() >= 2 / 3
    cw = build_attack("cw", target, steps=10, lr=0.01)(images, labels)
    assert ((cw - images).flatten(1).norm(dim=1) <= 1.0 + 1e-6).all()


def test_embedding_targets_refuse_classifier_only_attacks(encoder):
    with pytest.raises(TypeError):
        build_attack("cw", EmbeddingAwayTarget(encoder))
    with pytest.raises(TypeError):
        build_attack("apgd", EmbeddingAwayTarget(encoder))  # the default CE loss needs logits
    build_attack("apgd", EmbeddingAwayTarget(encoder), loss=None)  # its own loss is fine


def test_captioner_loss_of_clean_caption_rises(images):
    model = tiny_captioner()
    target = CaptionerTarget(model, image_size=32, max_new_tokens=6)
    caption = target.prepare(images, None)
    assert caption.shape == (3, 6) and (caption != -100).any()
    for name in ("fgsm", "pgd", "apgd"):
        kwargs = {} if name == "fgsm" else {"steps": 4}
        if name == "apgd":
            kwargs["loss"] = None
        adv = build_attack(name, target, **kwargs)(images, caption)
        assert (target.loss(adv, caption) > target.loss(images, caption)).all(), name
        assert (adv - images).abs().max() <= 8 / 255 + 1e-6
    assert all(p.grad is None for p in model.parameters())
