"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retlink.attacks.projections import perturbation_norms
from retlink.eval import metrics as M
from retlink.eval import runs as R

RANKS = [1, 3, None, 2, 1]  # hand: hits@1 = 2/5, hits@3 = 4/5, MRR = (1 + 1/3 + 0 + 1/2 + 1) / 5


def test_ranking_metrics():
    assert M.hits_at_1(RANKS) == pytest.approx(0.4)
    assert M.hits_at_k(RANKS, 2) == pytest.approx(0.6)
    assert M.hits_at_k(RANKS, 3) == pytest.approx(0.8)
    assert M.mrr(RANKS) == pytest.approx((1 + 1 / 3 + 0 + 0.5 + 1) / 5)
    assert M.mrr([0]) == 0.0 and math.isnan(M.mrr([]))


def test_accuracy_drops_and_recovery():
    clean = [True, True, True, True, False]  # 0.8
    attacked = [True, False, False, True, True]  # 0.6
    assert R.accuracy(clean) == pytest.approx(0.8)
    assert R.absolute_drop(0.8, 0.6) == pytest.approx(0.2)
    assert R.drop_ratio(0.8, 0.6) == pytest.approx(0.25)  # (clean - attacked) / clean: lower is better
    assert R.drop_ratio(0.8, 0.8) == 0 and R.drop_ratio(0.5, 0.0) == 1
    # clean-correct samples 0-3; of those, 1 and 2 are wrong attacked -> 2/4; sample 4 not credited
    assert R.attack_success_rate(clean, attacked) == pytest.approx(0.5)
    assert M.recovery(0.55, 0.30) == pytest.approx(0.25)
    assert math.isnan(R.drop_ratio(0.0, 0.0)) and math.isnan(R.attack_success_rate([False], [False]))
    summary = M.robustness_summary(clean, attacked)
    assert summary["drop_ratio"] == pytest.approx(0.25) and summary["attack_success_rate"] == pytest.approx(
        0.5
    )
    with pytest.raises(ValueError):
        R.attack_success_rate([True], [True, False])


def test_roc_auc_and_detector_summary_by_hand():
    assert M.roc_auc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert M.roc_auc([0.1, 0.4], [0.2, 0.4]) == pytest.approx(0.625)  # 2 wins, 1 loss, 1 tie of 4 pairs
    assert M.roc_auc([0.5, 0.6], [0.1, 0.2]) == 0.0 and math.isnan(M.roc_auc([], [1.0]))
    det = M.detector_summary([0.1, 0.9], [False, True], [1.5, 0.2, 1.3], [True, False, True])
    assert det["fpr_clean"] == 0.5 and det["detection_rate"] == pytest.approx(2 / 3)
    assert det["roc_auc"] == pytest.approx(5 / 6)  # 1.5 and 1.3 beat both clean, 0.2 only 0.1


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.array([0, 1] * 50, dtype=float)
    lo, hi = R.bootstrap_ci(values, seed=3)
    assert (lo, hi) == R.bootstrap_ci(values, seed=3)
    assert lo < 0.5 < hi and hi - lo < 0.3
    # binomial standard error sqrt(.25/100) = .05: a 95% interval spans about +-1.96 * .05
    assert hi - lo == pytest.approx(2 * 1.96 * 0.05, abs=0.04)
    assert R.bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)


def test_perturbation_norms():
    clean = torch.zeros(2, 3, 2, 2)
    adv = clean.clone()
    adv[0, 0, 0, 0] = 3 / 255
    adv[0, 1, 1, 1] = -4 / 255
    adv[1] = 1 / 255
    norms = perturbation_norms(clean, adv)
    assert norms["linf"] == pytest.approx([4 / 255, 1 / 255])
    assert norms["linf_255"] == pytest.approx([4.0, 1.0])
    assert norms["l2"] == pytest.approx([5 / 255, math.sqrt(12) / 255])
    with pytest.raises(ValueError):
        perturbation_norms(clean, adv[:1])
