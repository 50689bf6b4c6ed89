"""Adversarial fine-tuning of an open_clip image tower (`retlink train`, `kind: encoder`,
`network: open_clip`), on a tiny randomly initialised CLIP registered as an open_clip model config
(no download; a real ViT-B-32 is the same code on a GPU): FARE makes it fooled less often, the
checkpoint loads through open_clip itself as `pretrained` (embedder and attack surrogate alike,
named by its weights), a KB embedded with other weights is refused, and an attack on the tuned
file is white box for a pipeline that embeds with it."""

from __future__ import annotations

import json

import pytest
import torch

from retlink.core.errors import ConfigError, KBError
from retlink.train.encoder import load_batch, load_encoder_config, train_encoder, training_items
from tests.robust.helpers import SIZE, fooled_retrieval, make_benchmark

TINY = "retlink-tiny-tower"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small built benchmark, and a 32 px 2-layer ViT CLIP registered with open_clip."""
    import open_clip

    root = tmp_path_factory.mktemp("tower")
    (root / "cfg").mkdir()
    (root / "cfg" / f"{TINY}.json").write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 200, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(root / "cfg")
    return make_benchmark(root / "data")


def _config(data, out, **extra) -> dict:
    return {
        "kind": "encoder", "objective": "fare", "network": "open_clip", "open_clip_model": TINY, "out": str(out),
        "dataset": {"key": "logos", "root": str(data)}, "eps": "8/255", "steps": 2, "batch_size": 4,
        "lr": 1e-4, "image_size": SIZE, "train_last_blocks": None, "seed": 0, **extra,
    }


def _tower(pretrained):
    from retlink.train.towers import OpenClipTower

    return OpenClipTower(TINY, str(pretrained)).eval()


def test_fare_makes_a_tiny_open_clip_tower_fooled_less_often(data, tmp_path):
    from retlink.train.towers import OpenClipTower

    torch.manual_seed(0)  # the seed the trainer starts from: the same random tower
    start = tmp_path / "start.pt"
    torch.save(OpenClipTower(TINY).net.state_dict(), start)  # a plain open_clip weights file
    cfg = _config(data, tmp_path / "fare.pt", open_clip_pretrained=str(start), epochs=15)
    items = training_items(load_encoder_config(cfg))
    x = load_batch([p for p, _ in items], SIZE)
    gold = torch.arange(len(x))
    before = fooled_retrieval(_tower(start), x, x, gold, 4 / 255)
    done = train_encoder(cfg, progress=False)
    after = fooled_retrieval(_tower(done["path"]), x, x, gold, 4 / 255)
    assert before >= 0.5, before  # the attack works on the random tower
    assert after < before, (before, after)
    assert done["fingerprint"]["network"] == f"open_clip:{TINY}"
    assert done["fingerprint"]["base"] == __import__("hashlib").sha256(start.read_bytes()).hexdigest()


def test_the_tuned_tower_is_named_by_its_weights_and_refused_elsewhere(data, tmp_path):
    from retlink.attacks.attacked import surrogate
    from retlink.attacks.spec import AttackSpec
    from retlink.eval.config import PipelineSpec
    from retlink.eval.pipelines import attack_encoder, is_transfer, pipeline_image_encoder
    from retlink.tools.kb.build import build_kb
    from retlink.tools.kb.embedders import OpenClipImageEmbedder, shared_text_embedder
    from retlink.tools.kb.store import KBStore
    from retlink.tools.vision.weights import short_id

    first = train_encoder(_config(data, tmp_path / "a.pt", max_steps=1), progress=False)
    second = train_encoder(_config(data, tmp_path / "b.pt", max_steps=1, seed=1), progress=False)
    embedder = OpenClipImageEmbedder(TINY, first["path"])  # open_clip's own loader reads the file
    assert embedder.name == f"open_clip:{TINY}@{short_id(first['weights_sha256'])}"
    with torch.no_grad():  # the embedder runs the tuned weights, not a fresh random tower
        tuned = _tower(first["path"]).net.visual.proj
    assert torch.equal(embedder.model.visual.proj, tuned)
    build_kb(data / "entities.jsonl", tmp_path / "kb", shared_text_embedder(), embedder)
    assert KBStore(tmp_path / "kb", shared_text_embedder(), embedder).manifest["image_model"] == embedder.name
    with pytest.raises(KBError, match="has image vectors from"):
        KBStore(tmp_path / "kb", shared_text_embedder(), OpenClipImageEmbedder(TINY, second["path"]))
    # white box means the pipeline's own weights
    emb = {"image_backend": "open_clip", "open_clip_model": TINY, "open_clip_pretrained": first["path"]}
    pipe = PipelineSpec(name="clip", kind="retrieval", overrides={"embedder": emb})
    own = AttackSpec(name="own", attack="pgd", surrogate=f"open_clip:{TINY}", pretrained=first["path"])
    other = AttackSpec(name="other", attack="pgd", surrogate=f"open_clip:{TINY}", pretrained=second["path"])
    assert not is_transfer(pipeline_image_encoder(pipe), attack_encoder(own))
    assert is_transfer(pipeline_image_encoder(pipe), attack_encoder(other))
    assert surrogate(f"open_clip:{TINY}", first["path"]).weights_id == embedder.name


def test_open_clip_encoder_config_errors(data, tmp_path):
    from retlink.tools.kb.embedders import OpenClipImageEmbedder

    with pytest.raises(ConfigError, match="base is for the EfficientNet networks"):
        load_encoder_config(_config(data, tmp_path / "x.pt", base=str(tmp_path / "b.pt")))
    with pytest.raises(ConfigError, match="has no batch norm"):
        load_encoder_config(_config(data, tmp_path / "x.pt", freeze_bn_stats=False))
    done = train_encoder(_config(data, tmp_path / "a.pt", max_steps=1), progress=False)
    with pytest.raises(ConfigError, match=f"fine-tuned from open_clip:{TINY}, not open_clip:ViT-B-32"):
        OpenClipImageEmbedder("ViT-B-32", done["path"])
