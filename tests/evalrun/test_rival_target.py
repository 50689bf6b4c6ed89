"""`target: embedding_toward_rival`: the image attack aims at the decision's runner-up (the wrong
entity the fused text and image score ranks highest), not at the nearest wrong image. Checked
against the fused baseline's own clean ranking on the demo KB, with real embedders and PGD."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from retlink.attacks.attacked import AttackedStore, LabelMaker, clean_tensor, surrogate
from retlink.eval.config import load_eval_config
from retlink.eval.runner import Runner


def _config(kb_path, out) -> dict:
    pgd = {"attack": "pgd", "params": {"eps": "8/255", "alpha": "2/255", "steps": 5}}
    return {
        "name": "rival",
        "seed": 0,
        "dataset": {"key": "demo", "split": "test", "limit": 6},
        "kb": {"path": str(kb_path)},
        "pipelines": [{"name": "baseline", "kind": "baseline", "options": {"text_weight": 0.5, "image_weight": 0.5}}],
        "attacks": [
            {"name": "pgd-rival", "target": "embedding_toward_rival", **pgd},
            {"name": "pgd-nearest", "target": "embedding_toward_distractor", **pgd},
        ],
        "settings": ["it2t"],
        "metrics": {"bootstrap_resamples": 100},
        "output_dir": str(out),
    }


def test_rival_target_aims_at_the_fused_runner_up(tmp_path, demo_kb_path):
    runner = Runner(load_eval_config(_config(demo_kb_path, tmp_path / "runs")))
    runner.run(progress=False)
    recs = [json.loads(line) for line in (runner.dir / "results.jsonl").read_text().splitlines()]
    assert recs and all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    clean = {r["sample_id"]: r for r in recs if r["attack"] == "clean"}
    model = surrogate("efficientnet_lite0", None)
    labels = LabelMaker(runner.kb(), model, 224)
    rival_store, nearest_store = AttackedStore(runner.dir, "pgd-rival"), AttackedStore(runner.dir, "pgd-nearest")
    for sample in runner.samples():
        adv, meta = rival_store.load(sample.id)
        assert nearest_store.has(sample.id)
        # the baseline's clean ranking, wrong entities with a KB image only: its first is the rival
        ranked = [e for e in clean[sample.id]["candidates"] if e != sample.gold_id and labels.entity_features(e) is not None]
        assert meta["distractor"] == ranked[0], (sample.id, meta["distractor"], ranked[:3])
        gold, wrong = labels.entity_features(sample.gold_id), labels.entity_features(meta["distractor"])
        with torch.no_grad():
            f_clean = F.normalize(model.features(clean_tensor(sample.image_path, 224).unsqueeze(0))[0], dim=-1)
            f_adv = F.normalize(model.features(adv.unsqueeze(0))[0], dim=-1)
        assert float(f_adv @ wrong - f_adv @ gold) > float(f_clean @ wrong - f_clean @ gold) + 0.01


def test_the_rival_follows_the_sentence_where_the_nearest_image_does_not(demo_kb_path):
    """The same photo with two sentences: the nearest wrong image stays, the rival follows the
    entity the sentence names (its text similarity lifts it over the image neighbour)."""
    from retlink.datasets import load_dataset
    from retlink.tools.kb.embedders import shared_image_embedder, shared_text_embedder
    from retlink.tools.kb.store import KBStore

    kb = KBStore(demo_kb_path, shared_text_embedder(), shared_image_embedder())
    labels = LabelMaker(kb, surrogate("efficientnet_lite0", None), 224)
    cat = next(s for s in load_dataset("demo", None).samples("test") if s.gold_id == "chelsea_cat")
    x = clean_tensor(cat.image_path, 224)
    nearest = labels.distractor(x, cat.gold_id)
    assert labels.rival(x, cat) == nearest  # the sentence is about a cat: the nearest cat image wins
    rocket = cat.model_copy(update={"mention": "Falcon Heavy", "context": "The Falcon Heavy rocket lifts off."})
    assert labels.distractor(x, rocket.gold_id) == nearest
    assert labels.rival(x, rocket) == "falcon_heavy"
    y, chosen = labels.toward_distractor(x[None], [cat.gold_id], samples=[rocket])
    assert chosen == ["falcon_heavy"] and torch.allclose(y[0, 1], labels.entity_features("falcon_heavy"))
