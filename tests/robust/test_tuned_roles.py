"""The captioner and the detector on fine-tuned weights (issue 29 item 2: "the detector and
captioner where they share the network"): a role configured with `image_weights` runs the very
network object an attack with that checkpoint as `pretrained` differentiates, so one attack is
white box for every role on those weights. Random-initialised Lite0 checkpoints, real demo images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from retlink.core.errors import ConfigError
from tests.robust.helpers import random_checkpoint

DEMO_IMAGES = Path(__file__).resolve().parents[2] / "src" / "retlink" / "data" / "demo" / "images"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("w") / "tuned.pt", seed=3)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    path = sorted(p for p in DEMO_IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[0]
    with Image.open(path) as im:
        return im.convert("RGB")


def test_the_captioner_runs_the_checkpoint_an_attack_loads(tuned, photo):
    from retlink.agent.backends import shared_captioner
    from retlink.attacks.attacked import surrogate
    from retlink.core.schema import CaptionerConfig
    from retlink.tools.vision.efficientnet import preprocess
    from retlink.tools.vision.weights import short_id, weights_info

    packaged = shared_captioner(CaptionerConfig())
    captioner = shared_captioner(CaptionerConfig(image_weights=tuned))
    assert captioner.model is surrogate("lite0", tuned)  # white box: the attack's own network object
    caption = captioner.caption(photo)
    assert caption.model == f"efficientnet_lite0@{short_id(weights_info(tuned)['weights_sha256'])}"
    with torch.inference_mode():  # the caption's labels are the tuned network's top classes
        top = captioner.model(preprocess(photo).unsqueeze(0)).softmax(-1)[0].argmax()
    assert caption.labels[0][0] == captioner.labels[int(top)]
    assert packaged.caption(photo).labels != caption.labels  # random weights see another picture


def test_the_detector_squeezes_the_tuned_networks_predictions(tuned, photo):
    from retlink.agent.backends import _detector
    from retlink.agent.config import load_config
    from retlink.tools.vision.weights import shared_tuned

    plain = _detector(load_config({"defence": {"detector": {"enabled": True}}}))
    det = _detector(load_config({"defence": {"detector": {"enabled": True, "image_weights": str(tuned)}}}))
    assert det.model is shared_tuned(tuned) and "@" in det.network and "@" not in plain.network
    assert det.scores(photo) != plain.scores(photo)


def test_weights_of_another_network_or_for_a_served_captioner_are_refused(tuned):
    from pydantic import ValidationError

    from retlink.agent.backends import shared_captioner
    from retlink.core.schema import CaptionerConfig

    with pytest.raises(ConfigError, match="fine-tuned from efficientnet_lite0, not efficientnet_lite1"):
        shared_captioner(CaptionerConfig(vision_model="lite1", image_weights=tuned))
    with pytest.raises(ValidationError, match="image_weights is for backend efficientnet_tagger"):
        CaptionerConfig(backend="openai_vlm", model="m", image_weights=tuned)


def test_a_relative_weights_path_is_the_yaml_files(tuned, tmp_path):
    from retlink.agent.config import load_config

    (tmp_path / "w.pt").write_bytes(tuned.read_bytes())
    (tmp_path / "agent.yaml").write_text("captioner: {image_weights: w.pt}\ndefence: {detector: {image_weights: w.pt}}\n")
    cfg = load_config(tmp_path / "agent.yaml")
    assert cfg.captioner.image_weights == cfg.defence.detector.image_weights == tmp_path / "w.pt"


def test_the_detector_aware_attack_differentiates_the_detectors_own_weights(tuned):
    from retlink.attacks.adaptive import PGDDetectorAware, adaptive_attacks
    from retlink.attacks.targets import ClassifierTarget
    from retlink.core.schema import DefenceConfig
    from retlink.tools.vision.weights import shared_tuned

    tuned_detector = DefenceConfig.model_validate({"detector": {"enabled": True, "image_weights": str(tuned)}})
    (name, packaged_attack), _ = adaptive_attacks(tuned_detector, 2, "efficientnet_lite0")
    assert name == "pgd_detector_aware" and packaged_attack["classifier"] == str(tuned)
    (_, own_attack), _ = adaptive_attacks(tuned_detector, 2, "efficientnet_lite0", tuned)
    assert "classifier" not in own_attack  # the surrogate is the detector's network already
    (_, on_plain), _ = adaptive_attacks(DefenceConfig.model_validate({"detector": {"enabled": True}}), 2, "efficientnet_lite0", tuned)
    assert on_plain["classifier"] == "efficientnet_lite0"  # the detector kept the packaged weights
    target = ClassifierTarget(shared_tuned(tuned))
    attack = PGDDetectorAware(target, classifier=str(tuned), eps=2 / 255, steps=1)
    assert attack.classifier is shared_tuned(tuned)
    with pytest.raises(ValueError, match="nor is it a weights file"):
        PGDDetectorAware(target, classifier="no-such-network", eps=2 / 255, steps=1)


def test_retrained_captioner_or_detector_weights_are_another_experiment(tmp_path):
    from retlink.eval.config import load_eval_config

    weights = random_checkpoint(tmp_path / "w.pt", seed=0)

    def fingerprint(role: dict) -> str:
        cfg = {
            "name": "fp", "dataset": {"key": "demo", "split": "test"}, "kb": {"path": str(tmp_path / "kb")},
            "pipelines": [{"name": "a", "kind": "agent", "overrides": role}],
            "attacks": [{"name": "p", "attack": "pgd"}],
        }
        return load_eval_config(cfg).fingerprint()

    for role in ({"captioner": {"image_weights": str(weights)}},
                 {"defence": {"detector": {"enabled": True, "image_weights": str(weights)}}}):
        before = fingerprint(role)
        random_checkpoint(weights, seed=1)
        assert fingerprint(role) != before
        random_checkpoint(weights, seed=0)
