"""Exact worst-case bounds of a linear decision head's choice under an L-inf image attack.

A `DecisionHead` scores each candidate by a linear function of its features and NIL by a linear
function of the link's NIL row. When the features split into three kinds by how an image
perturbation of L-inf size eps can move them, the worst case of every margin the decision rests
on can be computed exactly, which turns the head's answer into a certificate:

- *exact* features do not depend on the image at all (the mention's text similarity, its rank in
  a candidate pool drawn from text and aliases only, an alias match, whether the KB entity has an
  image): they never move;
- the *thumbnail* feature, thumb_j = -||x - b_j||^2 / D for the query's pooled thumbnail x (D
  cells, each a mean of pixels, so each moves by at most eps; `retlink.tools.vision.certified`)
  and the candidate's b_j. Between two candidates with thumbnails the quadratic terms cancel:
  thumb_a - thumb_j moves by 2 delta . (b_a - b_j) / D, at most 2 eps ||b_a - b_j||_1 / D (tight
  on the thumbnail); for one candidate alone ||x + delta - b||^2 lies between
  sum_i max(|x_i - b_i| - eps, 0)^2 and sum_i (|x_i - b_i| + eps)^2 (per cell, exact);
- *spanned* features, whose lowest and highest value at eps the feature itself computes exactly
  per candidate (`Spanned.bounds`; template matching, `retlink.tools.vision.templates`):
  between two candidates the answer's may fall to its lowest while the rival's rises to its
  highest;
- *deep* features (a neural network's similarity) have no useful bound under any eps > 0: the
  attacker is assumed to set them anywhere in their range ([-1, 1] for a cosine similarity).
  Between two candidates a cosine similarity is still bounded, whatever the network does: for
  the query's unit embedding q and the candidates' unit KB vectors e_a, e_j,
  q . e_j - q . e_a <= ||e_j - e_a|| (Cauchy-Schwarz), so a rival whose KB image embeds close
  to the answer's can gain little over it however the query is embedded (`BoundedPool.vectors`;
  with several images per entity, the max over the rival's images of the min over the
  answer's). The tighter of that and the range bound is used.

So the answer is certified at eps when, for every rival, its margin under the worst case of each
kind stays positive: the exact part carries the decision, the thumbnail's and the templates'
bounded swings and the deep features' worst swing (their range, or the pairwise bound where it is
tighter) are what it must outweigh. A certificate's `parts` split the decisive margin by kind so
a user sees which evidence carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from retlink.agent.decision.head import DecisionHead

#: every image in [0, 1] lies within L-inf 1 of any other: a larger radius says nothing more
MAX_RADIUS = 1.0
#: bisection steps for the radius (1 / 2^20 of the range: far below one 8-bit level)
_BISECT_STEPS = 20


class Spanned(Protocol):
    """A feature value that knows its exact range under an L-inf image perturbation of eps."""

    def bounds(self, eps: float) -> tuple[float, float]:
        """(lowest, highest) value of the feature for any perturbation of L-inf size eps."""
        ...


@dataclass(frozen=True)
class BoundedPool:
    """One link's pool as the bounds see it.

    `rows` are the head's feature rows (clean image), `nil` its NIL row (exact features only);
    `thumb_col` the index of the thumbnail feature (None: the head has none), `deep` maps a
    column index to that feature's (low, high) range; `query` (D,) is the clean query thumbnail
    and `thumbs[j]` candidate j's thumbnail (None: the entity has no image, so its thumbnail
    and deep features are constants)."""

    rows: np.ndarray
    nil: np.ndarray
    thumb_col: int | None
    deep: dict[int, tuple[float, float]]
    query: np.ndarray
    thumbs: list[np.ndarray | None]
    #: per candidate, its KB image vectors (k, d), unit length (None: no image): the deep
    #: features' pairwise bound; without them only the range bound is used
    vectors: list[np.ndarray | None] | None = None
    #: column index -> per candidate, the feature's `Spanned` range (None: a constant)
    spans: dict[int, list[Spanned | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class HeadCertificate:
    """The head's answer (index into the pool, `len(pool)` = NIL), whether it is certified at
    the eps asked, its radius, and the decisive margin split by evidence kind."""

    answer: int
    certified: bool
    radius: float
    #: the closest rival's clean margin, and how much of it the thumbnail and the deep features
    #: can take away at this eps (the rival whose worst-case margin is lowest)
    parts: dict[str, float]


def _coefficients(head: DecisionHead) -> np.ndarray:
    """Per-feature weights on the raw (unstandardised) scale."""
    return np.asarray(head.weights, dtype=np.float64) / np.asarray(head.scale, dtype=np.float64)


def _distance_range(query: np.ndarray, thumb: np.ndarray, eps: float) -> tuple[float, float]:
    """min and max of ||x + delta - b||^2 over ||delta||_inf <= eps (per cell, exact)."""
    diff = np.abs(np.asarray(query, np.float64) - np.asarray(thumb, np.float64))
    return float((np.maximum(diff - eps, 0.0) ** 2).sum()), float(((diff + eps) ** 2).sum())


def _swing(c: float, value: float, lo: float, hi: float) -> tuple[float, float]:
    """How far c * f can move below and above its clean value c * value for f in [lo, hi]."""
    ends = (c * lo, c * hi)
    return min(ends) - c * value, max(ends) - c * value


#: the evidence kinds a margin is split into (besides the clean margin)
KINDS = ("thumbnail", "template", "deep")


def _thumb_swing(pool: BoundedPool, coef: np.ndarray, j: int, eps: float) -> tuple[float, float]:
    """(down, up): how far candidate j's thumbnail term can move its logit, alone."""
    thumb = pool.thumbs[j]
    if thumb is None or pool.thumb_col is None:
        return 0.0, 0.0
    dim = len(pool.query)
    dmin, dmax = _distance_range(pool.query, thumb, eps)
    value = float(pool.rows[j, pool.thumb_col])
    return _swing(float(coef[pool.thumb_col]), value, -dmax / dim, -dmin / dim)


def _span_swing(pool: BoundedPool, coef: np.ndarray, j: int, eps: float) -> tuple[float, float]:
    """(down, up): how far candidate j's spanned features (templates) can move its logit."""
    down = up = 0.0
    if pool.thumbs[j] is None:
        return down, up
    for col, spans in pool.spans.items():
        if spans[j] is not None:
            d, u = _swing(float(coef[col]), float(pool.rows[j, col]), *spans[j].bounds(eps))
            down, up = down + d, up + u
    return down, up


def _candidate_swing(
    pool: BoundedPool, coef: np.ndarray, j: int, eps: float
) -> dict[str, tuple[float, float]]:
    """Per evidence kind, (down, up): how far candidate j's logit can move, each kind alone
    (used against NIL, whose logit is exact)."""
    down = up = 0.0
    if pool.thumbs[j] is not None:
        for col, (lo, hi) in pool.deep.items():
            d, u = _swing(float(coef[col]), float(pool.rows[j, col]), lo, hi)
            down, up = down + d, up + u
    return {
        "thumbnail": _thumb_swing(pool, coef, j, eps),
        "template": _span_swing(pool, coef, j, eps),
        "deep": (down, up),
    }


def _pair_swing(pool: BoundedPool, coef: np.ndarray, a: int, j: int, eps: float) -> dict[str, float]:
    """Per evidence kind, the most the margin logit_a - logit_j can fall (<= 0)."""
    ta, tj = pool.thumbs[a], pool.thumbs[j]
    fall = dict.fromkeys(KINDS, 0.0)
    if pool.thumb_col is not None and ta is not None and tj is not None:
        # the quadratic terms cancel: the margin moves by c * 2 delta . (b_a - b_j) / D
        c = float(coef[pool.thumb_col])
        fall["thumbnail"] = (
            -abs(c) * 2.0 * eps * float(np.abs(np.asarray(ta) - np.asarray(tj)).sum()) / len(pool.query)
        )
    else:
        fall["thumbnail"] = _thumb_swing(pool, coef, a, eps)[0] - _thumb_swing(pool, coef, j, eps)[1]
    # spanned features move independently: the answer's to its low end, the rival's to its high
    fall["template"] = _span_swing(pool, coef, a, eps)[0] - _span_swing(pool, coef, j, eps)[1]
    for col, (lo, hi) in pool.deep.items():
        c = float(coef[col])
        down_a = _swing(c, float(pool.rows[a, col]), lo, hi)[0] if ta is not None else 0.0
        up_j = _swing(c, float(pool.rows[j, col]), lo, hi)[1] if tj is not None else 0.0
        worst = down_a - up_j
        va, vj = (pool.vectors[a], pool.vectors[j]) if pool.vectors is not None else (None, None)
        if va is not None and vj is not None and ta is not None and tj is not None:
            # c * (s_a - s_j) falls at worst to -|c| * (the most the favoured side can gain)
            gain = _cosine_gain(vj, va) if c > 0 else _cosine_gain(va, vj)
            clean = c * float(pool.rows[a, col] - pool.rows[j, col])
            worst = max(worst, -abs(c) * gain - clean)
        fall["deep"] += worst
    return fall


def _cosine_gain(winner: np.ndarray, loser: np.ndarray) -> float:
    """An upper bound on max over unit q of (max_k q . w_k - max_l q . l_l): for each of the
    winner's vectors, the nearest of the loser's bounds its lead (Cauchy-Schwarz)."""
    w = np.asarray(winner, dtype=np.float64).reshape(-1, np.shape(winner)[-1])
    lo = np.asarray(loser, dtype=np.float64).reshape(-1, np.shape(loser)[-1])
    dist = np.linalg.norm(w[:, None, :] - lo[None, :, :], axis=-1)
    return float(dist.min(axis=1).max())


def _rival_falls(
    coef: np.ndarray, pool: BoundedPool, answer: int, logits: np.ndarray, eps: float
) -> list[tuple[int, float, dict[str, float]]]:
    """Per rival option j (NIL = len(pool.rows)): the clean margin logit_answer - logit_j and,
    per evidence kind, the most an attack within eps can take from it."""
    n = len(pool.rows)
    out = []
    for j in range(n + 1):
        if j == answer:
            continue
        clean = float(logits[answer] - logits[j])
        if answer < n and j < n:
            fall = _pair_swing(pool, coef, answer, j, eps)
        elif answer < n:  # the answer against NIL (exact): the answer's logit falls
            fall = {k: down for k, (down, _) in _candidate_swing(pool, coef, answer, eps).items()}
        else:  # NIL against candidate j: j's logit rises
            fall = {k: -up for k, (_, up) in _candidate_swing(pool, coef, j, eps).items()}
        out.append((j, clean, fall))
    return out


def _worst(
    coef: np.ndarray, pool: BoundedPool, answer: int, logits: np.ndarray, eps: float
) -> tuple[float, dict[str, float]]:
    """The lowest worst-case margin of `answer` over every rival option, and its parts."""
    worst, parts = float("inf"), {}
    for _, clean, fall in _rival_falls(coef, pool, answer, logits, eps):
        margin = clean + sum(fall.values())
        if margin < worst:
            worst, parts = margin, {"clean_margin": clean, **fall}
    return worst, parts


def margin_falls(head: DecisionHead, pool: BoundedPool, answer: int, eps: float) -> np.ndarray:
    """(len(pool) + 1,): for each option j, the most an attack within eps can take from the
    margin logit_answer - logit_j (<= 0; 0 at `answer` itself). An adaptive attack on a
    radius gate aims at these worst-case margins rather than the clean ones."""
    logits = head.logits(pool.rows, pool.nil)
    out = np.zeros(len(pool.rows) + 1)
    for j, _, fall in _rival_falls(_coefficients(head), pool, answer, logits, eps):
        out[j] = sum(fall.values())
    return out


def certify_head(head: DecisionHead, pool: BoundedPool, eps: float, margin: float = 0.0) -> HeadCertificate:
    """The head's answer on the clean pool and its certificate at `eps`, with its radius (the
    largest eps it is certified at, by bisection: the bounds grow with eps).

    The certificate says the answer's logit stays more than `margin` above every rival's for
    every perturbation within eps: 0 for the head's own answer to stand; a cascade's gate
    (answer only above a margin) asks for its own margin, so the gate stays open too."""
    return certify_head_at(head, pool, [eps], margin)[0]


def certify_head_at(
    head: DecisionHead, pool: BoundedPool, budgets: list[float], margin: float = 0.0
) -> list[HeadCertificate]:
    """`certify_head` at each of `budgets`: the answer and its radius do not depend on the
    budget, so they are found once and only each budget's worst case is computed."""
    logits = head.logits(pool.rows, pool.nil)
    answer = int(np.argmax(logits))
    if len(pool.rows) == 0:  # NIL with no candidate: nothing an image could change
        return [HeadCertificate(answer, True, MAX_RADIUS, {}) for _ in budgets]
    coef = _coefficients(head)

    def holds(e: float) -> bool:
        return _worst(coef, pool, answer, logits, e)[0] > margin

    if holds(MAX_RADIUS):
        radius = MAX_RADIUS
    elif not holds(1e-9):
        radius = 0.0
    else:
        lo, hi = 1e-9, MAX_RADIUS
        for _ in range(_BISECT_STEPS):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if holds(mid) else (lo, mid)
        radius = lo
    out = []
    for eps in budgets:
        worst, parts = _worst(coef, pool, answer, logits, eps)
        out.append(
            HeadCertificate(answer, worst > margin, radius, {k: round(v, 6) for k, v in parts.items()})
        )
    return out


def clean_margin(head: DecisionHead, pool: BoundedPool) -> float:
    """The head's answer's logit minus the best rival's (NIL included) on the clean pool; inf
    when nothing competes."""
    return head.top_margin(pool.rows, pool.nil)[1]
