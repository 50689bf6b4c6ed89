"""Every image role on EfficientNet-Lite1 (encoder diversity, the step after
test_encoder_diversity.py): the tagger captioner (`captioner.vision_model`), the image embedder
(`embedder.image_backend`, with a KB built by it) and the feature-squeezing detector
(`defence.detector.model`), with real weights and the real demo photos and KB entities. The
defence eval and the detector-aware attack squeeze on the detector's own network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from retlink.agent.backends import shared_captioner
from retlink.agent.config import load_config
from retlink.attacks import TextAlignmentTarget, build_attack
from retlink.attacks.adaptive import adaptive_attacks
from retlink.attacks.attacked import Features
from retlink.core.errors import ConfigError
from retlink.core.schema import CaptionerConfig, DefenceConfig
from retlink.tools.vision.detector import SqueezeDetector
from retlink.tools.vision.efficientnet import shared_model
from tests.conftest import fast_config

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "retlink" / "data" / "demo"
CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
LITE1 = "efficientnet_lite1"


def _lite1_config(kb_path: Path, **defence) -> dict:
    """The embedded default with every image role on Lite1, its own KB built from the demo entities."""
    return fast_config(
        kb_path,
        kb={"path": str(kb_path), "entities": str(DEMO / "entities.jsonl")},
        captioner={"vision_model": LITE1},
        embedder={"image_backend": LITE1},
        enhancer={"enabled": False},
        defence={"detector": {"enabled": True, "model": LITE1, **defence}},
    )


@pytest.fixture(scope="module")
def lite1_kb(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kb-lite1") / "demo-kb-lite1"


@pytest.fixture(scope="module")
def lite1_linker(lite1_kb):
    from retlink import Linker

    return Linker.from_config(_lite1_config(lite1_kb))


@pytest.fixture(scope="module")
def chelsea() -> dict:
    rows = [json.loads(line) for line in (DEMO / "examples.jsonl").read_text().splitlines() if line.strip()]
    return next(r for r in rows if r["image"].endswith("chelsea.jpg"))


def _node(result, name: str):
    return next(e for e in result.trace if e.node == name)


def test_tagger_on_lite1_captions_a_cat_and_says_which_network():
    tagger = shared_captioner(CaptionerConfig(vision_model=LITE1))
    assert tagger.model is shared_model("cpu", "lite1") and tagger.network == LITE1
    cap = tagger.caption(Image.open(DEMO / "images" / "chelsea.jpg"))
    assert cap.labels[0][0] in CAT_CLASSES  # measured: Egyptian cat 37%, tabby 30%, tiger cat 23%
    assert cap.backend == "efficientnet_tagger" and cap.model == LITE1
    default = shared_captioner(CaptionerConfig())
    assert default.model is shared_model("cpu", "lite0") and default.network == "efficientnet_lite0"


def test_linker_with_every_image_role_on_lite1_links_the_demo(lite1_linker, lite1_kb, chelsea):
    comp = lite1_linker.components
    assert comp.kb.manifest["image_model"] == LITE1  # the KB was built with the Lite1 embedder
    assert comp.image_embedder.name == LITE1 and comp.captioner.network == LITE1
    assert comp.detector.model is shared_model("cpu", "lite1") and comp.detector.network == LITE1
    r = lite1_linker.link(DEMO / chelsea["image"], chelsea["mention"], chelsea["context"])
    assert r.entity_id == chelsea["gold"]
    assert r.caption.model == LITE1 and _node(r, "caption").detail["model"] == LITE1
    detect = _node(r, "detect")
    assert detect.detail["model"] == LITE1 and not r.perturbed  # clean photo under the 1.2 threshold
    assert 0 < max(detect.detail["scores"].values()) < 1.2


def test_detector_on_lite1_flags_at_threshold_zero_and_routes(lite1_linker, lite1_kb, chelsea):
    from retlink import Linker

    guarded = Linker.from_config(_lite1_config(lite1_kb, threshold=0.0))
    assert guarded.components.detector.model is lite1_linker.components.detector.model  # shared
    r = guarded.link(DEMO / chelsea["image"], chelsea["mention"], chelsea["context"])
    detect = _node(r, "detect")
    assert r.perturbed and detect.detail["flagged"] and detect.detail["model"] == LITE1
    assert _node(r, "purify").detail["steps"] == ["jpeg(75)"]  # the flagged route
    assert _node(r, "plan_queries").detail["widened"]
    assert "looks perturbed" in r.perturbation_note


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"captioner\.vision_model"):
        load_config({"captioner": {"vision_model": "efficientnet_lite2"}})
    with pytest.raises(ConfigError, match=r"defence\.detector\.model"):
        load_config({"defence": {"detector": {"model": "resnet50"}}})
    with pytest.raises(ConfigError, match=r"captioner: .*vision_model .* is for backend efficientnet_tagger"):
        load_config({"captioner": {"backend": "openai_vlm", "vision_model": LITE1}})
    cfg = load_config(None)
    assert (
        cfg.captioner.vision_model == "efficientnet_lite0"
        and cfg.defence.detector.model == "efficientnet_lite0"
    )


def test_detector_aware_attack_squeezes_on_the_detectors_network():
    lite1_det = DefenceConfig.model_validate({"detector": {"enabled": True, "model": LITE1}})
    (name, kw), _ = adaptive_attacks(lite1_det, 2)
    assert name == "pgd_detector_aware" and kw["classifier"] == LITE1
    (_, same), _ = adaptive_attacks(lite1_det, 2, network=LITE1)
    assert "classifier" not in same  # the target's own network: nothing to name
    (_, default), _ = adaptive_attacks(DefenceConfig.model_validate({"detector": {"enabled": True}}), 2)
    assert "classifier" not in default  # unchanged keys, so earlier results keep their attack keys
    attack = build_attack(
        "pgd_detector_aware", TextAlignmentTarget(Features(shared_model())), "normal", classifier=LITE1
    )
    assert attack.classifier is shared_model("cpu", "lite1") and attack.params["classifier"] == LITE1
    assert attack.target.classifier is attack.classifier  # what the squeeze penalty runs on
    with pytest.raises(ValueError, match=r"classifier.*unknown network"):
        build_attack("pgd_detector_aware", TextAlignmentTarget(Features(shared_model())), classifier="vit")


def test_adaptive_attack_runs_the_detector_on_its_network(tmp_path, demo_kb_path, chelsea):
    from retlink.attacks.attacked import AttackedStore, clean_tensor
    from retlink.eval.config import load_eval_config
    from retlink.eval.runner import Runner
    from retlink.eval.variants import attack_variants
    from retlink.tools.images import load_image

    cfg = load_eval_config(
        {
            "name": "lite1-detector",
            "dataset": {"key": "demo", "split": "test", "limit": 1},  # ex01, chelsea.jpg
            "kb": {"path": str(demo_kb_path)},
            "pipelines": [
                {"name": "tagger-detect-lite1", "kind": "tagger", "overrides": {"defence": {"detector": {"enabled": True, "model": LITE1}}}}
            ],
            "attacks": [{"name": "adaptive", "attack": "adaptive", "params": {"steps": 1, "eot_samples": 1}}],
            "output_dir": str(tmp_path),
        }
    )
    variants = attack_variants(cfg, cfg.attack("adaptive"))
    aware = next(v for v in variants.values() if v.spec.attack == "pgd_detector_aware")
    assert aware.spec.params["classifier"] == LITE1  # the attack squeezes on the detector's network
    runner = Runner(cfg)
    runner.run(progress=False)
    recs = {r["attack"]: r for r in map(json.loads, (runner.dir / "results.jsonl").read_text().splitlines())}
    # the clean image as the runner gives it (224 px tensor), scored by each network's detector
    img = load_image(clean_tensor(DEMO / chelsea["image"], 224))
    squeezers = DefenceConfig().detector.squeezers
    on_lite1 = SqueezeDetector(shared_model("cpu", "lite1"), squeezers).score(img)
    on_lite0 = SqueezeDetector(shared_model("cpu", "lite0"), squeezers).score(img)
    assert abs(on_lite1 - on_lite0) > 0.005  # the two networks score the photo differently
    assert recs["clean"]["detector_score"] == pytest.approx(on_lite1, abs=1e-4)
    assert AttackedStore(runner.dir, aware.store).has("demo:ex01")
