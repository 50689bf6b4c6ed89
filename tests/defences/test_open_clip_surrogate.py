"""An open_clip image encoder as the attack surrogate, named in YAML (`surrogate: open_clip:MODEL`
with a local `pretrained` file), on a tiny randomly initialised CLIP registered as an open_clip
model config; the pipeline attacked is KB image retrieval on that very tower (white box)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from retlink.attacks.attacked import AttackedStore, LabelMaker, clean_tensor, surrogate
from retlink.core.errors import ConfigError
from retlink.eval.config import load_eval_config
from retlink.eval.runner import Runner
from tests.conftest import DEMO

TINY = "retlink-tiny-clip"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """Register a 32 px, 2-layer ViT CLIP as an open_clip model config; save random weights."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    (folder / f"{TINY}.json").write_text(
        json.dumps(
            {
                "embed_dim": 32,
                "vision_cfg": {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 32},
                "text_cfg": {"context_length": 16, "vocab_size": 200, "width": 32, "heads": 2, "layers": 1},
            }
        )
    )
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    weights = folder / "weights" / "tiny.pt"
    weights.parent.mkdir()
    torch.save(open_clip.create_model(TINY).state_dict(), weights)
    return weights


def _config(tmp_path, demo_kb_path, **attack) -> dict:
    return {
        "name": "clip",
        "dataset": {"key": "demo", "split": "test", "limit": 2},
        "kb": {"path": str(demo_kb_path)},
        "pipelines": [
            {
                "name": "clip-retrieval",
                "kind": "retrieval",
                "overrides": {"embedder": {"image_backend": "open_clip", "open_clip_model": TINY, "open_clip_pretrained": "x"}},
                "kb": {"path": str(tmp_path / "kb-clip"), "entities": str(DEMO / "entities.jsonl")},
            }
        ],
        "attacks": [{"name": "pgd-clip", "attack": "pgd", "params": {"eps": "8/255", "steps": 5}, **attack}],
        "output_dir": str(tmp_path / "runs"),
    }


def test_open_clip_surrogate_config_checks(tmp_path, demo_kb_path):
    base = _config(tmp_path, demo_kb_path)
    with pytest.raises(ConfigError, match="classifier needs an ImageNet surrogate"):
        load_eval_config({**base, "attacks": [{"name": "p", "attack": "pgd", "target": "classifier", "surrogate": f"open_clip:{TINY}"}]})
    with pytest.raises(ConfigError, match="not the ensemble"):
        load_eval_config({**base, "attacks": [{"name": "p", "attack": "pgd", "surrogate": "lite0+lite1", "pretrained": "w.pt"}]})
    with pytest.raises(ConfigError, match="names no model"):
        load_eval_config({**base, "attacks": [{"name": "p", "attack": "pgd", "surrogate": "open_clip:"}]})
    with pytest.raises(ConfigError, match="weights not found"):
        surrogate(f"open_clip:{TINY}", tmp_path / "missing.pt")



@pytest.mark.slow  # builds a KB with the tiny tower and attacks 2 photos (about 20 s on 2 cores)
def test_open_clip_surrogate_attacks_a_clip_pipeline_white_box(tmp_path, demo_kb_path, tiny_weights):
    cfg = _config(tmp_path, demo_kb_path, surrogate=f"open_clip:{TINY}", pretrained="weights/tiny.pt")
    cfg["pipelines"][0]["overrides"]["embedder"]["open_clip_pretrained"] = str(tiny_weights)
    path = tiny_weights.parent.parent / "clip.yaml"
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_eval_config(path)
    assert loaded.attack("pgd-clip").pretrained == tiny_weights  # relative to the YAML file
    runner = Runner(loaded)
    runner.run(progress=False)
    recs = [json.loads(line) for line in (runner.dir / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    assert runner.pipeline("clip-retrieval").kb.image_embedder.name == f"open_clip:{TINY}"
    model = surrogate(f"open_clip:{TINY}", tiny_weights)
    labels = LabelMaker(runner.kb(), model, 224)
    store = AttackedStore(runner.dir, "pgd-clip")
    for sample in runner.samples():
        adv, meta = store.load(sample.id)
        assert meta["norms"]["linf_255"] <= 8 + 1e-3
        gold, wrong = labels.entity_features(sample.gold_id), labels.entity_features(meta["distractor"])
        with torch.no_grad():
            f_clean = F.normalize(model.features(clean_tensor(sample.image_path, 224).unsqueeze(0))[0], dim=-1)
            f_adv = F.normalize(model.features(adv.unsqueeze(0))[0], dim=-1)
        # the tower's own embedding moved toward the distractor's KB image and away from the gold one
        assert float(f_adv @ wrong - f_adv @ gold) > float(f_clean @ wrong - f_clean @ gold) + 0.01
