"""Synthetic training links for the decision head with a known answer, shared by the head's
tests and the LLM-skip tests (which need a fitted head)."""

from __future__ import annotations

import numpy as np

from retlink.agent.decision import Group
from retlink.agent.decision.features import FEATURES

D = len(FEATURES)


def synthetic_groups(n: int, seed: int, informative: int = 0, nil_every: int = 0) -> list[Group]:
    """Links whose gold candidate has the highest value of feature `informative` (plus noise
    features); every `nil_every`-th link has no right candidate and a low best value."""
    rng = np.random.default_rng(seed)
    groups = []
    for i in range(n):
        rows = rng.normal(size=(6, D))
        gold = int(rng.integers(6))
        rows[gold, informative] += 3.0
        nil = np.array([rows[:, informative].max(), 0.0, 0.0, 0.0])
        if nil_every and i % nil_every == 0:
            rows[:, informative] -= 3.0
            nil = np.array([rows[:, informative].max(), 0.0, 0.0, 0.0])
            gold = 6
        groups.append(Group(rows=rows, nil=nil, gold=gold))
    return groups
