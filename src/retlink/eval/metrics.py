"""Ranking and detector metrics of the eval runner: gold rank, Hits@k, MRR, recovery, ROC AUC.

Pure functions over plain arrays, so the runner, the report and the tests share one definition.
Accuracy, drop, attack success rate and bootstrap intervals, which the MATE report uses too, are
`retlink.eval.runs`; how far an attacked image moved is `retlink.attacks.projections`.
Ranks are 1-based positions of the gold entity in a pipeline's candidate list (None or 0 when
the gold entity is absent, which counts as a miss at every k and contributes 0 to MRR).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from retlink.eval.runs import absolute_drop, accuracy, attack_success_rate, drop_ratio

Ranks = Sequence[int | None]


def _ranks(ranks: Ranks) -> np.ndarray:
    """Ranks as floats with misses as +inf, so `<= k` and `1 / r` need no special cases."""
    return np.array([np.inf if r is None or r <= 0 else float(r) for r in ranks], dtype=np.float64)


def gold_rank(result: Any, gold: str) -> int | None:
    """1-based rank of the gold entity in a `LinkResult`: the answer first, then the candidates
    in order; None when absent.

    The answer can differ from the top candidate (the reasoner may overturn retrieval), and
    Hits@1 must mean "the answer is right"; NIL gold is rank 1 exactly when the answer is NIL.
    """
    from retlink.core.types import NIL

    if result.entity_id == gold:
        return 1
    if gold == NIL:
        return None
    ranked = [c.entity.id for c in result.candidates if c.entity.id != result.entity_id]
    if result.entity_id != NIL:
        ranked.insert(0, result.entity_id)
    return ranked.index(gold) + 1 if gold in ranked else None


def hits_at_k(ranks: Ranks, k: int) -> float:
    """Share of samples whose gold entity is ranked within the top k."""
    r = _ranks(ranks)
    return float(np.mean(r <= k)) if r.size else float("nan")


def hits_at_1(ranks: Ranks) -> float:
    """Share of samples whose gold entity is ranked first (accuracy of the top answer)."""
    return hits_at_k(ranks, 1)


def mrr(ranks: Ranks) -> float:
    """Mean reciprocal rank; a miss contributes 0."""
    r = _ranks(ranks)
    return float(np.mean(1.0 / r)) if r.size else float("nan")


def recovery(agent_attacked: float, baseline_attacked: float) -> float:
    """What the agent wins back under an attack: agent minus baseline accuracy, same attack."""
    return agent_attacked - baseline_attacked


def roc_auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties half
    (the Mann-Whitney statistic; no sklearn needed). nan when either side is empty."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    if not neg.size or not pos.size:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def detector_summary(
    clean_scores: Sequence[float],
    clean_flagged: Sequence[bool],
    attacked_scores: Sequence[float],
    attacked_flagged: Sequence[bool],
) -> dict[str, float]:
    """A perturbation detector scored as a detector on one attack: ROC AUC of its scores
    (clean = negative, attacked = positive), its false-positive rate on the clean images and its
    detection rate on the attacked ones at the threshold it ran with (the flags)."""
    return {
        "roc_auc": roc_auc(clean_scores, attacked_scores),
        "fpr_clean": accuracy(clean_flagged),
        "detection_rate": accuracy(attacked_flagged),
    }


def robustness_summary(clean_correct: Sequence[bool], attacked_correct: Sequence[bool]) -> dict[str, float]:
    """The per-attack numbers a report table needs, from per-sample correctness."""
    clean, attacked = accuracy(clean_correct), accuracy(attacked_correct)
    return {
        "accuracy_clean": clean,
        "accuracy_attacked": attacked,
        "absolute_drop": absolute_drop(clean, attacked),
        "drop_ratio": drop_ratio(clean, attacked),
        "attack_success_rate": attack_success_rate(clean_correct, attacked_correct),
    }
