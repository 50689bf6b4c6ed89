"""The decision-level attack on an agent with a decision head (`eval/experiments/agent_attack.py`):
its differentiable copy must be the pipeline's own decision (same features, same logits on the
clean image), and PGD-EOT through the pipeline's purifier must raise the best rival's lead over
the right answer. The embedded default's shipped head, the demo KB, real networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retlink.core.types import PoolFeatures
from retlink.eval.experiments.agent_attack import _link_signals, attack_sample, merge_outcomes
from tests.conftest import fast_config

PURIFY = [{"kind": "resample", "scale": 0.5}, {"kind": "jpeg", "quality": 75}]


@pytest.fixture(scope="module")
def head_agent(demo_kb_path):
    from retlink import Linker

    cfg = fast_config(demo_kb_path, decision={"head": "auto"}, reasoner={"enabled": False}, defence={"purify": PURIFY})
    linker = Linker.from_config(cfg)
    assert linker.components.head is not None  # the shipped head fits the demo KB's embedders
    return linker


@pytest.mark.slow  # PGD-EOT on 4 demo images through two networks (about 20 s on 2 cores)
def test_the_copy_is_the_pipelines_decision_and_the_attack_raises_the_rivals_lead(head_agent):
    from retlink.datasets import load_dataset

    samples = list(load_dataset("demo", None).samples("test"))[:4]
    rows = [attack_sample(head_agent, s, [8 / 255], steps=5, draws=2) for s in samples]
    attacked = [r for r in rows if r["clean"]]
    assert attacked, "the head agent answers none of the first demo samples right"
    for r in attacked:
        assert r["feature_gap"] < 1e-3, r  # the copy's features are the pipeline's on the clean image
        assert r["rival_lead"]["clean"] < 0, r  # right answer: no rival leads in the copy either
        # the attack pushed toward a rival: its lead grew (or the pipeline's answer flipped)
        assert r["rival_lead"]["8/255"] > r["rival_lead"]["clean"] + 0.05 or r["attacks"]["8/255"] is not None, r


def test_the_copys_logits_are_the_heads(head_agent):
    """On the clean image the copy's logits equal `DecisionHead.logits` of the recorded rows."""
    import torch.nn.functional as F

    from retlink.attacks.adaptive import RandomPurifier, parse_steps
    from retlink.attacks.attacked import clean_tensor
    from retlink.datasets import load_dataset
    from retlink.eval.experiments.agent_attack import HeadMarginTarget, _agent_parts

    sample = next(iter(load_dataset("demo", None).samples("test")))
    x = clean_tensor(sample.image_path, 224)
    result = head_agent.link(x, sample.mention, sample.context)
    model, kb, head, fusion, purify = _agent_parts(head_agent)
    feats = result.features
    vectors = kb.image_vectors(feats.ids)
    target = HeadMarginTarget(model, head, feats, [vectors.get(i) for i in feats.ids], 0, fusion=fusion, purified=True)
    with torch.no_grad():
        e = F.normalize(model.features(RandomPurifier(parse_steps(purify), jitter=False)(x[None])).double(), dim=-1)[0]
        z = target.logits(e).numpy()
    want = head.logits(np.asarray(feats.rows), np.asarray(feats.nil))
    # (the recorded rows are rounded: similarities to 4 decimals, features to 5)
    assert np.allclose(z, want, atol=2e-3), (z, want)


def test_link_signals_are_read_back_from_the_interactions():
    names = ["image_gap", "image_gap_x_detector", "image_gap_x_purified"]
    feats = PoolFeatures(names=names, ids=["a", "b"], rows=[[0.0, 0.0, 0.0], [-0.2, -0.06, -0.2]], nil=[])
    assert _link_signals(feats) == pytest.approx((0.3, True))
    flat = PoolFeatures(names=names, ids=["a"], rows=[[0.0, 0.0, 0.0]], nil=[])
    assert _link_signals(flat) == (0.0, False)


def test_outcomes_of_several_runs_merge_into_one_worst_case():
    a = {"s1": {"2/255": True, "8/255": False}, "s2": {"8/255": True}}
    b = {"s1": {"2/255": False}, "s2": {"8/255": True, "2/255": True}, "s3": {"8/255": False}}
    assert merge_outcomes([a, b]) == {
        "s1": {"2/255": False, "8/255": False},
        "s2": {"8/255": True, "2/255": True},
        "s3": {"8/255": False},
    }
