"""The certificate of a linear decision head over exact, thumbnail and deep features
(`retlink.agent.decision.bounds`) against the strongest attack on those features: for each
rival, the thumbnail perturbation that moves that margin most (the vertex attack, or per-cell
moves for a candidate alone) with the deep features put at the worst ends of their range. A
certified answer is never changed by it; an uncertified one always is (the bound is exact on the
features); the radius separates the two; and a head fitted by `retlink train` on the
`certified` pipeline's demo links gives the pipeline certificates that this attack cannot break.
"""

from __future__ import annotations

import numpy as np
import pytest

from retlink.agent.decision import DecisionHead
from retlink.agent.decision.bounds import BoundedPool, certify_head

EXACT, DIM = 3, 12
THUMB, DEEP = EXACT, EXACT + 1  # columns
RANGE = (-1.0, 1.0)


def _thumb_feature(x: np.ndarray, t: np.ndarray | None) -> float:
    return -float(((t - x) ** 2).mean()) if t is not None else 0.0


def _random_pool(rng: np.random.Generator) -> tuple[DecisionHead, BoundedPool]:
    n = int(rng.integers(1, 6))
    x = rng.uniform(0.2, 0.8, DIM)
    thumbs = [
        None if rng.random() < 0.2 else np.clip(x + rng.normal(0, rng.uniform(0.02, 0.3), DIM), 0, 1) for _ in range(n)
    ]
    rows = np.zeros((n, EXACT + 2))
    rows[:, :EXACT] = rng.normal(0, 1, (n, EXACT))
    rows[:, THUMB] = [_thumb_feature(x, t) for t in thumbs]
    rows[:, DEEP] = [rng.uniform(*RANGE) if t is not None else 0.0 for t in thumbs]
    head = DecisionHead(
        features=[f"f{i}" for i in range(EXACT + 2)], nil_features=["n0"],
        mean=rng.normal(0, 0.1, EXACT + 2), scale=rng.uniform(0.5, 2.0, EXACT + 2),
        weights=np.append(rng.normal(0, 1, EXACT), [rng.normal(0, 20), rng.normal(0, 0.3)]),
        nil_bias=float(rng.normal(-1, 1)), nil_weights=rng.normal(0, 1, 1),
    )
    return head, BoundedPool(rows, rng.normal(0, 1, 1), THUMB, {DEEP: RANGE}, x, thumbs)


def _attacks(head: DecisionHead, pool: BoundedPool, answer: int, eps: float):
    """Attacked feature rows: for each rival option, the perturbation that lowers the answer's
    margin over it most (thumbnail within eps, deep features at their range's worst ends)."""
    coef = head.weights / head.scale
    n, x = len(pool.rows), pool.query
    for rival in range(n + 1):
        if rival == answer:
            continue
        down = answer if answer < n else None  # whose logit the attack lowers
        up = rival if rival < n else None  # and raises
        tb = pool.thumbs[down] if down is not None else None
        tr = pool.thumbs[up] if up is not None else None
        c = coef[THUMB]
        if tb is not None and tr is not None:  # the vertex attack: toward the rival, away from the answer
            delta = eps * np.sign(c) * np.sign(tr - tb)
        elif tb is not None:  # lower the answer's thumb logit alone
            away = np.sign(x - tb)
            delta = eps * away if c > 0 else -np.sign(x - tb) * np.minimum(eps, np.abs(x - tb))
        elif tr is not None:  # raise the rival's
            delta = -np.sign(x - tr) * np.minimum(eps, np.abs(x - tr)) if c > 0 else eps * np.sign(x - tr)
        else:
            delta = np.zeros_like(x)
        rows = pool.rows.copy()
        rows[:, THUMB] = [_thumb_feature(x + delta, t) for t in pool.thumbs]
        cd = coef[DEEP]
        for j in range(n):
            if pool.thumbs[j] is None:
                continue
            if j == down:
                rows[j, DEEP] = RANGE[0] if cd > 0 else RANGE[1]
            elif j == up:
                rows[j, DEEP] = RANGE[1] if cd > 0 else RANGE[0]
        yield rows


def _broken(head: DecisionHead, pool: BoundedPool, answer: int, eps: float) -> bool:
    return any(int(np.argmax(head.logits(rows, pool.nil))) != answer for rows in _attacks(head, pool, answer, eps))


def test_head_certificate_holds_against_the_worst_feature_attack_and_is_exact():
    rng = np.random.default_rng(0)
    seen = {True: 0, False: 0}
    for _ in range(800):
        head, pool = _random_pool(rng)
        eps = float(rng.choice([1, 2, 4, 8, 16])) / 255
        cert = certify_head(head, pool, eps)
        assert cert.answer == int(np.argmax(head.logits(pool.rows, pool.nil)))
        broken = _broken(head, pool, cert.answer, eps)
        assert broken != cert.certified, (cert, eps)
        seen[cert.certified] += 1
        # the radius separates certified from not (up to the bisection's resolution)
        if 1e-6 < cert.radius < 0.99:
            assert certify_head(head, pool, cert.radius * 0.999).certified
            assert not certify_head(head, pool, cert.radius * 1.001 + 1e-6).certified
    assert min(seen.values()) > 100, seen  # both outcomes exercised


def test_deep_features_alone_never_certify_and_exact_margins_always_do():
    rng = np.random.default_rng(1)
    head, pool = _random_pool(rng)
    while len(pool.rows) < 2 or any(t is None for t in pool.thumbs):
        head, pool = _random_pool(rng)
    # a head that reads only the deep feature: any eps > 0 lets the attacker pick the answer
    deep_only = DecisionHead(head.features, head.nil_features, np.zeros(5), np.ones(5),
                             np.array([0, 0, 0, 0, 5.0]), -50.0, np.zeros(1))
    cert = certify_head(deep_only, pool, 1 / 255)
    assert not cert.certified and cert.radius == 0.0 and cert.parts["deep"] < 0
    # a head that reads only exact features: certified at every eps, the whole range included
    exact_only = DecisionHead(head.features, head.nil_features, np.zeros(5), np.ones(5),
                              np.array([3.0, 0, 0, 0, 0]), -50.0, np.zeros(1))
    rows = pool.rows.copy()
    rows[:, 0] = np.arange(len(rows), dtype=float)  # distinct exact scores: a clear answer
    pool = BoundedPool(rows, pool.nil, THUMB, {DEEP: RANGE}, pool.query, pool.thumbs)
    cert = certify_head(exact_only, pool, 16 / 255)
    assert cert.certified and cert.radius == 1.0 and cert.parts["thumbnail"] == cert.parts["deep"] == 0.0


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_certified_answers_survive_real_pgd_on_the_thumbnail_pixels(eps):
    """Not only on the features: PGD on real pixels through the thumbnail (pooling included)
    against the head's margin never changes a certified answer."""
    import torch

    from retlink.tools.vision.certified import thumbnail

    rng = np.random.default_rng(2)
    torch.manual_seed(0)
    checked = 0
    for _ in range(30):
        pixels = torch.rand(3, 16, 16, dtype=torch.float64)
        x = thumbnail(pixels, 2).numpy()
        n = int(rng.integers(2, 5))
        thumbs = [np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1) for _ in range(n)]
        rows = np.zeros((n, 2))
        rows[:, 0] = rng.normal(0, 1.0, n)
        rows[:, 1] = [_thumb_feature(x, t) for t in thumbs]
        head = DecisionHead(["e", "t"], ["n"], np.zeros(2), np.ones(2), np.array([1.0, 300.0]), -50.0, np.zeros(1))
        pool = BoundedPool(rows, np.zeros(1), 1, {}, x, thumbs)
        cert = certify_head(head, pool, eps)
        if not cert.certified:
            continue
        checked += 1
        b = torch.tensor(np.stack(thumbs))
        clean = head.logits(rows, pool.nil)[:n]
        clean[cert.answer] = -np.inf
        for rival in [int(np.argmax(clean))]:  # the closest rival
            delta = torch.zeros_like(pixels, requires_grad=True)
            for _ in range(15):
                t = thumbnail((pixels + delta).clamp(0, 1), 2)
                logit = torch.tensor(rows[:, 0]) + 300.0 * -(((b - t) ** 2).mean(dim=1))
                margin = logit[cert.answer] - logit[rival]
                (grad,) = torch.autograd.grad(margin, delta)
                with torch.no_grad():
                    delta -= eps / 4 * grad.sign()
                    delta.clamp_(-eps, eps)
            with torch.no_grad():
                t = thumbnail((pixels + delta).clamp(0, 1), 2).numpy()
            attacked = rows.copy()
            attacked[:, 1] = [_thumb_feature(t, th) for th in thumbs]
            assert int(np.argmax(head.logits(attacked, pool.nil))) == cert.answer
    assert checked >= 8


# -- the `certified` pipeline with a head fitted by `retlink train` -----------------------------


def _train_config(kb_path, out, deep: bool) -> dict:
    """A head fitted on the demo's links (the demo has one split: this checks the machinery,
    it measures nothing)."""
    return {
        "name": "demo-certified",
        "pipelines": ["certified"],
        "out": str(out),
        "eval": {
            "name": "demo-certified-train",
            "dataset": {"key": "demo", "split": "test"},
            "kb": {"path": str(kb_path)},
            "pipelines": [{"name": "certified", "kind": "certified",
                           "options": {"text_candidates": 3, "deep": deep, "eps": ["8/255"]}}],
            "settings": ["it2t"],
            "output_dir": str(out.parent / "runs"),
        },
    }


def test_a_head_fitted_on_certified_links_decides_with_certificates(tmp_path, demo_kb_path):
    from retlink.attacks.attacked import clean_tensor
    from retlink.core.errors import ConfigError
    from retlink.eval.certified import CertifiedConfig, CertifiedLinker, feature_names
    from retlink.train import train
    from tests.defences.test_certified import DEMO, _examples

    path, head = train(_train_config(demo_kb_path, tmp_path / "deep.head.json", deep=True))
    assert head.features == feature_names(True) and head.nil_features == ["best_mention", "any_alias"]
    assert head.metrics["links"] >= 8
    options = {"text_candidates": 3, "deep": True, "head": str(path), "eps": ["2/255", "8/255"]}
    linker = CertifiedLinker.from_kb(demo_kb_path, CertifiedConfig.model_validate(options))
    ex = _examples()
    result = linker.link(clean_tensor(DEMO / ex["ex03"]["image"], 224), "Falcon", ex["ex03"].get("context", ""))
    detail = result.trace[0].detail
    assert result.features is not None and result.features.names == feature_names(True)
    # the head's answer is its own argmax, and the certificate is the bounds' on that pool
    z = head.logits(np.array(result.features.rows), np.array(result.features.nil))
    options_ = [*result.features.ids, "NIL"]
    assert result.entity_id == options_[int(np.argmax(z))]
    parts = detail["margin_at_8/255"]
    assert set(parts) == {"clean_margin", "thumbnail", "template", "deep"} and parts["deep"] <= 0 and parts["thumbnail"] <= 0
    assert detail["certified"]["8/255"] == (sum(parts.values()) > 0)
    assert detail["certified"]["8/255"] == (detail["radius_255"] > 8)
    # a head is bound to its features: one fitted with the deep feature is refused without it
    with pytest.raises(ConfigError, match=r"fitted on features"):
        CertifiedLinker.from_kb(demo_kb_path, CertifiedConfig.model_validate({**options, "deep": False}))
