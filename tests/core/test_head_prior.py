"""The decision head's fallback prior and the penalty chosen by leaving a benchmark out: with
little data a head pulled toward the agent's own ranking stays that ranking, and the choice of
strength picks the one that does not lose on the benchmark a head was not fitted on."""

from __future__ import annotations

import numpy as np
import pytest

from retlink.agent.decision import DecisionHead, Group
from retlink.agent.decision.features import FEATURES, NIL_FEATURES
from retlink.train import TrainConfig, choose_l2, fallback_accuracy

FUSED, IMAGE = FEATURES.index("fused_gap"), FEATURES.index("image")


def _links(n: int, seed: int, image_sign: float) -> list[Group]:
    """Links whose gold leads on the fused score (+1.5), and whose `image` feature points to the
    gold (`image_sign` > 0) or away from it (< 0): one benchmark where the image agrees with the
    fusion, another where it misleads."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        rows = rng.normal(size=(5, len(FEATURES)))
        gold = int(rng.integers(5))
        rows[gold, FUSED] += 1.5
        rows[gold, IMAGE] += 2.5 * image_sign
        out.append(Group(rows=rows, nil=np.zeros(len(NIL_FEATURES)), gold=gold))
    return out


def _accuracy(head: DecisionHead, groups: list[Group]) -> float:
    return head.evaluate(groups)["accuracy"]


def test_a_strong_fallback_prior_is_the_own_ranking_and_a_zero_prior_is_not():
    groups = _links(200, 0, image_sign=1.0)
    pulled = DecisionHead.fit(groups, list(FEATURES), list(NIL_FEATURES), l2=1e4, prior="fallback")
    shrunk = DecisionHead.fit(groups, list(FEATURES), list(NIL_FEATURES), l2=1e4)
    own = [int(np.argmax(g.rows[:, FUSED])) for g in groups]
    assert [int(np.argmax(pulled.logits(g.rows, g.nil)[:-1])) for g in groups] == own
    assert np.abs(shrunk.weights).max() < 1e-2  # pulled to zero: no ranking left
    assert pulled.weights[FUSED] > 0.5 and np.abs(np.delete(pulled.weights, FUSED)).max() < 1e-2
    with pytest.raises(ValueError, match="fused_gap"):
        DecisionHead.fit([Group(g.rows[:, :3], g.nil, g.gold) for g in groups], ["a", "b", "c"], list(NIL_FEATURES),
                         prior="fallback")


def test_leaving_a_benchmark_out_picks_the_strength_that_does_not_lose_on_it():
    agree, mislead = _links(150, 1, image_sign=1.0), _links(150, 2, image_sign=-1.0)
    groups = agree + mislead
    ids = [f"agree:{i}" for i in range(150)] + [f"mislead:{i}" for i in range(150)]
    cfg = TrainConfig(name="t", eval="x.yaml", pipelines=["p"], l2=[1e-4, 30.0], prior="fallback")
    l2, scores = choose_l2(groups, ids, list(FEATURES), list(NIL_FEATURES), cfg)
    # fitted on one benchmark alone, a weak penalty learns that benchmark's image habit and loses
    # to the own ranking on the other; the strong one stays near the own ranking
    weak = scores["0.0001"]["held_out_gain"]
    assert min(weak.values()) < -0.05, scores
    assert l2 == 30.0 and scores["30.0"]["score"] > min(weak.values())
    held = DecisionHead.fit(agree, list(FEATURES), list(NIL_FEATURES), l2=l2, prior="fallback")
    assert _accuracy(held, mislead) >= fallback_accuracy(mislead, list(FEATURES)) - 0.05
