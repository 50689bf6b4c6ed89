"""The certified pipeline's sharper evidence and its cascade (issue 29, item 1).

- the deep cosine feature's pairwise bound (`BoundedPool.vectors`): for one unit vector per
  entity it is exact, so the attack that puts the query's embedding on the rival's side of the
  pair (with the thumbnail's vertex attack) breaks every uncertified answer and no certified one;
- a certificate asked with a margin (the cascade's gate) keeps the answer's logit above the
  margin under that attack;
- the context-overlap feature counts the sentence's words in each candidate's text;
- the cascade pipeline on the demo KB with heads fitted by `retlink train`: the exact head answers
  (certified) where its margin opens the gate, the deep head elsewhere (certified only where
  the exact head is certified to give the same answer);
- the gate's dev experiment: its table and choice follow the held-out answers.
"""

from __future__ import annotations

import numpy as np
import pytest

from retlink.agent.decision import DecisionHead
from retlink.agent.decision.bounds import (
    BoundedPool,
    certify_head,
    certify_head_at,
    clean_margin,
    margin_falls,
)
from retlink.agent.decision.features import context_overlap

EXACT, DIM, EMB = 3, 12, 6
THUMB, DEEP = EXACT, EXACT + 1


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _thumb_feature(x: np.ndarray, t: np.ndarray) -> float:
    return -float(((t - x) ** 2).mean())


def _rows(
    pool_x: np.ndarray, thumbs: list[np.ndarray], exact: np.ndarray, q: np.ndarray, vecs: np.ndarray
) -> np.ndarray:
    rows = np.zeros((len(thumbs), EXACT + 2))
    rows[:, :EXACT] = exact
    rows[:, THUMB] = [_thumb_feature(pool_x, t) for t in thumbs]
    rows[:, DEEP] = vecs @ q
    return rows


def _random_case(rng: np.random.Generator):
    n = int(rng.integers(2, 6))
    x = rng.uniform(0.2, 0.8, DIM)
    thumbs = [np.clip(x + rng.normal(0, rng.uniform(0.02, 0.3), DIM), 0, 1) for _ in range(n)]
    base = _unit(rng.normal(0, 1, EMB))
    # some rivals embed close to each other (the pairwise bound's point), some far
    vecs = _unit(base + rng.normal(0, rng.uniform(0.05, 1.5), (n, EMB)))
    q = _unit(base + rng.normal(0, 0.5, EMB))
    exact = rng.normal(0, 1, (n, EXACT))
    head = DecisionHead(
        features=[f"f{i}" for i in range(EXACT + 2)],
        nil_features=["n0"],
        mean=np.zeros(EXACT + 2),
        scale=rng.uniform(0.5, 2.0, EXACT + 2),
        weights=np.append(rng.normal(0, 1, EXACT), [rng.normal(0, 20), rng.normal(0, 3)]),
        nil_bias=float(rng.normal(-1, 1)),
        nil_weights=rng.normal(0, 1, 1),
    )
    rows = _rows(x, thumbs, exact, q, vecs)
    pool = BoundedPool(
        rows, rng.normal(0, 1, 1), THUMB, {DEEP: (-1.0, 1.0)}, x, thumbs, [v[None, :] for v in vecs]
    )
    return head, pool, exact, vecs


def _worst_rows(
    head: DecisionHead, pool: BoundedPool, exact: np.ndarray, vecs: np.ndarray, answer: int, eps: float
):
    """For each rival option, the features after the attack that lowers the answer's margin over
    it most: the thumbnail's vertex attack, and the query embedded where the rival gains most
    (along e_rival - e_answer; against NIL, opposite the answer's own vector)."""
    coef = head.weights / head.scale
    n, x = len(pool.rows), pool.query
    c_t, c_d = coef[THUMB], coef[DEEP]
    for rival in range(n + 1):
        if rival == answer:
            continue
        if answer < n and rival < n:
            delta = eps * np.sign(c_t) * np.sign(pool.thumbs[rival] - pool.thumbs[answer])
            q = _unit(np.sign(c_d) * (vecs[rival] - vecs[answer]))
        elif answer < n:  # against NIL: the answer's own logit falls
            tb = pool.thumbs[answer]
            delta = eps * np.sign(x - tb) if c_t > 0 else -np.sign(x - tb) * np.minimum(eps, np.abs(x - tb))
            q = -np.sign(c_d) * vecs[answer]
        else:  # NIL against a candidate: the candidate's logit rises
            tr = pool.thumbs[rival]
            delta = -np.sign(x - tr) * np.minimum(eps, np.abs(x - tr)) if c_t > 0 else eps * np.sign(x - tr)
            q = np.sign(c_d) * vecs[rival]
        yield rival, _rows(x + delta, pool.thumbs, exact, q, vecs)


def test_the_pairwise_deep_bound_is_exact_for_one_vector_per_entity():
    rng = np.random.default_rng(0)
    seen = {True: 0, False: 0}
    tighter = 0
    for _ in range(600):
        head, pool, exact, vecs = _random_case(rng)
        eps = float(rng.choice([1, 2, 4, 8])) / 255
        cert = certify_head(head, pool, eps)
        broken = any(
            int(np.argmax(head.logits(rows, pool.nil))) != cert.answer
            for _, rows in _worst_rows(head, pool, exact, vecs, cert.answer, eps)
        )
        assert broken != cert.certified, (cert, eps)
        seen[cert.certified] += 1
        # several budgets at once: each one's certificate, the radius found once
        assert certify_head_at(head, pool, [eps, 16 / 255]) == [
            certify_head(head, pool, eps),
            certify_head(head, pool, 16 / 255),
        ]
        # without the vectors only the range bound is left: never certifies more
        loose = certify_head(
            head, BoundedPool(pool.rows, pool.nil, THUMB, pool.deep, pool.query, pool.thumbs), eps
        )
        assert not (loose.certified and not cert.certified)
        tighter += cert.certified and not loose.certified
    assert min(seen.values()) > 80, seen
    assert tighter > 20  # the pairwise bound certifies answers the range bound cannot


def test_a_certificate_with_a_margin_keeps_the_answer_above_it():
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(400):
        head, pool, exact, vecs = _random_case(rng)
        eps = 4 / 255
        gate = float(rng.uniform(0.1, 3.0))
        cert = certify_head(head, pool, eps, gate)
        assert cert.certified == (sum(cert.parts.values()) > gate)
        if not cert.certified:
            continue
        checked += 1
        assert certify_head(head, pool, eps).certified  # a margin above the gate is above 0
        assert clean_margin(head, pool) > gate
        for rival, rows in _worst_rows(head, pool, exact, vecs, cert.answer, eps):
            z = head.logits(rows, pool.nil)
            assert z[cert.answer] - z[rival] > gate - 1e-9
    assert checked > 30


def test_the_per_rival_falls_are_the_certificates_own_worst_case():
    """`margin_falls` (what an adaptive attack on a radius gate aims at) is the certificate's
    worst case rival by rival: its lowest clean margin plus fall is the certificate's margin,
    and the vertex attack on each rival takes exactly that fall from the thumbnail's share."""
    rng = np.random.default_rng(2)
    for _ in range(200):
        head, pool, exact, vecs = _random_case(rng)
        eps = float(rng.uniform(0.5, 8.0)) / 255
        cert = certify_head(head, pool, eps)
        falls = margin_falls(head, pool, cert.answer, eps)
        z = head.logits(pool.rows, pool.nil)
        assert falls[cert.answer] == 0.0 and (falls <= 1e-12).all()
        worst = min(z[cert.answer] - z[j] + falls[j] for j in range(len(z)) if j != cert.answer)
        assert worst == pytest.approx(sum(cert.parts.values()), abs=1e-5)  # parts are rounded
        for rival, rows in _worst_rows(head, pool, exact, vecs, cert.answer, eps):
            attacked = head.logits(rows, pool.nil)
            # no attack takes more than the fall (the bound), whatever the deep feature does
            assert attacked[cert.answer] - attacked[rival] >= z[cert.answer] - z[rival] + falls[rival] - 1e-9


def test_context_overlap_counts_the_sentences_other_words_in_each_text():
    texts = [
        "Lion Air is an airline. Its brand colour is red. Its logo was taken from lionair.co.id.",
        "Wizz Air is an airline. Its brand colour is pink. Its logo was taken from wizzair.com.",
        "Air Serbia. Its brand colour is blue.",
    ]
    got = context_overlap("The red Air mark from a .com site was painted on the van.", "Air", texts)
    # "red" for Lion Air; "com" for Wizz Air; nothing for Air Serbia (the mention itself, "Air",
    # and function words such as "the", "is", "from" never count)
    assert got.tolist() == [1.0, 1.0, 0.0]
    assert context_overlap("", "Air", texts).tolist() == [0.0, 0.0, 0.0]
    assert context_overlap("Air", "Air", texts).tolist() == [0.0, 0.0, 0.0]
    assert context_overlap("Brand colour: blue", "Air", texts).tolist() == [2.0, 2.0, 3.0]


# -- the cascade pipeline on the demo KB -----------------------------------------------------------


@pytest.fixture(scope="module")
def demo_heads(tmp_path_factory, demo_kb_path):
    """The certified pipeline's two heads fitted by `retlink train` on the demo's links: (the
    folder holding the runs, the deep head's path, the exact head's path, the exact head)."""
    from retlink.train import train
    from tests.defences.test_head_certificate import _train_config

    tmp_path = tmp_path_factory.mktemp("certified-heads")
    deep_path, _ = train(_train_config(demo_kb_path, tmp_path / "deep.head.json", deep=True))
    cfg = _train_config(demo_kb_path, tmp_path / "exact.head.json", deep=False)
    cfg["eval"]["name"] = "demo-certified-exact-train"
    exact_path, exact_head = train(cfg)
    return tmp_path, deep_path, exact_path, exact_head


def test_the_cascade_answers_by_the_exact_head_only_where_its_margin_opens_the_gate(demo_heads, demo_kb_path):
    from retlink.attacks.attacked import clean_tensor
    from retlink.core.errors import ConfigError
    from retlink.eval.certified import CertifiedConfig, CertifiedLinker, feature_names
    from retlink.eval.runs import RESULTS, read_records
    from retlink.train.certified_gate import held_out_links
    from tests.defences.test_certified import DEMO, _examples

    tmp_path, deep_path, exact_path, exact_head = demo_heads
    assert exact_head.features == feature_names(False)

    ex = _examples()
    samples = [
        (clean_tensor(DEMO / e["image"], 224), e["mention"], e.get("context", "")) for e in ex.values()
    ]
    margins = []
    exact_only = CertifiedLinker.from_kb(
        demo_kb_path,
        CertifiedConfig.model_validate(
            {"text_candidates": 3, "head": str(exact_path), "eps": ["2/255", "8/255"]}
        ),
    )
    for image, mention, context in samples:
        r = exact_only.link(image, mention, context)
        if r.features is not None and r.features.ids:
            z = exact_head.logits(np.array(r.features.rows), np.array(r.features.nil))
            margins.append(float(np.sort(z)[-1] - np.sort(z)[-2]))
    gate = float(np.median(margins))  # half the links open it, half do not
    options = {
        "text_candidates": 3,
        "deep": True,
        "head": str(deep_path),
        "exact_head": str(exact_path),
        "gate_margin": gate,
        "eps": ["2/255", "8/255"],
    }
    cascade = CertifiedLinker.from_kb(demo_kb_path, CertifiedConfig.model_validate(options))
    by = {"exact head": 0, "deep head": 0}
    for image, mention, context in samples:
        result = cascade.link(image, mention, context)
        detail = result.trace[0].detail
        if "gate" not in detail:  # no candidate at all: NIL whatever the image
            continue
        by[detail["decided_by"]] += 1
        exact_alone = exact_only.link(image, mention, context)
        if detail["decided_by"] == "exact head":
            assert detail["gate"]["exact_margin"] > gate
            assert result.entity_id == exact_alone.entity_id
            # certified with the gate's margin implies certified by the exact head alone
            for label, ok in detail["certified"].items():
                assert not ok or exact_alone.trace[0].detail["certified"][label]
        else:
            assert detail["gate"]["exact_margin"] <= gate
            # certified only where the exact head, were the gate to open, is certified to say the same
            for label, ok in detail["certified"].items():
                assert not ok or (
                    exact_alone.trace[0].detail["certified"][label]
                    and exact_alone.entity_id == result.entity_id
                )
            if exact_alone.entity_id != result.entity_id:
                assert not any(detail["certified"].values()) and detail["radius_255"] == 0.0
    assert by["exact head"] and by["deep head"], by

    # the gate experiment reads the deep pipeline's training run: one held-out answer per clean link
    records = list(read_records(tmp_path / "runs" / "demo-certified-train" / RESULTS).values())
    links = held_out_links(records, "certified", folds=3)
    assert len(links) == sum(1 for r in records if r["attack"] == "clean" and r["features"]["ids"])
    with pytest.raises(ConfigError, match="no 'image' feature"):
        held_out_links(
            list(read_records(tmp_path / "runs" / "demo-certified-exact-train" / RESULTS).values()),
            "certified",
        )

    # a cascade is both heads and a gate, and its exact side is bound to the exact features
    with pytest.raises(ValueError, match="both exact_head and a gate"):
        CertifiedConfig.model_validate({**options, "gate_margin": None})
    with pytest.raises(ValueError, match="one gate"):
        CertifiedConfig.model_validate({**options, "gate_radius": "1/255"})
    with pytest.raises(ValueError, match="give the deep head too"):
        CertifiedConfig.model_validate({**options, "deep": False})
    with pytest.raises(ConfigError, match="fitted on features"):
        CertifiedLinker.from_kb(
            demo_kb_path, CertifiedConfig.model_validate({**options, "exact_head": str(deep_path)})
        )


def test_a_radius_gate_stays_open_on_every_image_within_eps_of_a_certified_answer(demo_heads, demo_kb_path):
    """The radius gate's certificate at eps is the exact head's at eps + the radius: images
    within eps of a certified link (random corners of the ball and the thumbnail's worst
    direction) still open the gate on the same answer, and the certificates say so."""
    import torch

    from retlink.attacks.attacked import clean_tensor
    from retlink.eval.certified import CertifiedConfig, CertifiedLinker
    from tests.defences.test_certified import DEMO, _examples

    _, deep_path, exact_path, _ = demo_heads
    radius, eps = 2 / 255, 4 / 255
    base = {"text_candidates": 3, "head": str(exact_path), "eps": [radius, eps, radius + eps]}
    exact_only = CertifiedLinker.from_kb(demo_kb_path, CertifiedConfig.model_validate(base))
    cascade = CertifiedLinker.from_kb(
        demo_kb_path,
        CertifiedConfig.model_validate(
            {**base, "deep": True, "head": str(deep_path), "exact_head": str(exact_path), "gate_radius": radius, "eps": [eps]}
        ),
    )
    gen = torch.Generator().manual_seed(0)
    opened = checked = 0
    for e in _examples().values():
        image = clean_tensor(DEMO / e["image"], 224)
        result = cascade.link(image, e["mention"], e.get("context", ""))
        detail = result.trace[0].detail
        if "gate" not in detail:
            continue
        alone = exact_only.link(image, e["mention"], e.get("context", "")).trace[0].detail
        assert (detail["decided_by"] == "exact head") == alone["certified"][f"{2}/255"]
        assert detail["gate"]["exact_radius_255"] == pytest.approx(alone["radius_255"], abs=1e-3)
        if detail["decided_by"] != "exact head":
            continue
        opened += 1
        # certified at eps exactly where the exact head alone is certified at eps + radius
        assert detail["certified"]["4/255"] == alone["certified"]["6/255"]
        if not detail["certified"]["4/255"]:
            continue
        for _ in range(4):
            sign = torch.randint(0, 2, image.shape, generator=gen).to(image.dtype) * 2 - 1
            moved = (image + eps * sign).clamp(0, 1)
            again = cascade.link(moved, e["mention"], e.get("context", ""))
            assert again.trace[0].detail["decided_by"] == "exact head"
            assert again.entity_id == result.entity_id
            checked += 1
    assert opened and checked, (opened, checked)


def test_the_radius_gate_choice_weighs_clean_and_certified_answers():
    from retlink.core.errors import ConfigError
    from retlink.train.certified_gate import HeldOut, choose_radius, radius_table

    links = [
        HeldOut("a", exact_right=True, exact_margin=5.0, deep_right=True, exact_radius_255=9.0),
        HeldOut("b", exact_right=True, exact_margin=2.0, deep_right=True, exact_radius_255=3.5),
        HeldOut("c", exact_right=False, exact_margin=1.0, deep_right=True, exact_radius_255=1.5),
        HeldOut("d", exact_right=True, exact_margin=0.5, deep_right=False, exact_radius_255=0.5),
    ]
    rows = {r["gate"]: r for r in radius_table(links, (0.25, 1.0, 2.0), (2.0, 8.0))}
    # 0.25: every gate opens, c is lost; d, right only by the exact head, is kept
    assert rows[0.25] == {"gate": 0.25, "cascade": 75.0, "exact_answers": 100.0, "certified_2": 50.0, "certified_8": 25.0}
    # 1: d's gate closes (the deep head gets it wrong), c's opens
    assert rows[1.0]["cascade"] == 50.0 and rows[1.0]["certified_2"] == 50.0
    # 2: a and b answer (certified at 2/255: radius >= 2 + 2), c and d go to the deep head
    assert rows[2.0] == {"gate": 2.0, "cascade": 75.0, "exact_answers": 50.0, "certified_2": 25.0, "certified_8": 0.0}
    # the deep head alone: 75; the lowest radius that keeps it is 0.25, losing a point none is
    assert choose_radius(links, radii=(0.25, 1.0, 2.0)) == 0.25
    assert choose_radius(links, radii=(1.0, 2.0)) == 2.0
    assert choose_radius(links, radii=(1.0,)) is None
    assert choose_radius(links, max_loss=25.0, radii=(1.0, 2.0)) == 1.0
    assert choose_radius(links, radii=(0.25, 1.0, 2.0), at=2.0) == 0.25  # 75 + 50 beats 50 + 50 and 75 + 25
    # floors on the certified share: 0.25 (75 clean, 50 and 25 certified) keeps 2:0.6 but not 8:0.5;
    # 1 (50 clean, 50 and 25 certified) keeps both; 2 (75 clean, 25 and 0) keeps neither
    assert choose_radius(links, radii=(0.25, 1.0, 2.0), keep={2.0: 0.6}) == 0.25
    assert choose_radius(links, radii=(0.25, 1.0, 2.0), keep={2.0: 0.6, 8.0: 0.5}) == 1.0
    assert choose_radius(links, radii=(2.0,), keep={2.0: 0.6}) is None
    with pytest.raises(ConfigError, match="not both"):
        choose_radius(links, at=2.0, keep={2.0: 0.6})
    with pytest.raises(ConfigError, match="no exact-head radius"):
        radius_table([HeldOut("a", True, 1.0, True)])


def test_runs_of_disjoint_splits_pool_their_links_and_overlapping_ones_are_refused(demo_heads, tmp_path):
    """The gate experiment over two runs (the demo's deep run split by sample into two folders,
    as a DEV and a TRAIN run would be): the same held-out answers and radii as over the one run,
    each sample relinked through its own run; a sample in both runs is refused."""
    import json
    import shutil

    from retlink.core.errors import ConfigError
    from retlink.eval.runs import RESULTS, RUN_META, read_records
    from retlink.train.certified_gate import held_out_links, pipeline_radius, pooled_records

    whole = demo_heads[0] / "runs" / "demo-certified-train"
    records = list(read_records(whole / RESULTS).values())
    ids = sorted({r["sample_id"] for r in records})
    halves = [tmp_path / "first", tmp_path / "second"]
    for half, part in zip(halves, (ids[: len(ids) // 2], ids[len(ids) // 2 :]), strict=True):
        half.mkdir()
        shutil.copy(whole / RUN_META, half / RUN_META)
        lines = [json.dumps(r) for r in records if r["sample_id"] in part]
        (half / RESULTS).write_text("\n".join(lines) + "\n")

    def links(runs):
        got = held_out_links(pooled_records(runs), "certified", folds=3, exact_radius=pipeline_radius(runs, "certified"))
        return sorted(got, key=lambda x: x.sample_id)

    one, two = links([whole]), links(halves)
    assert len(one) == sum(1 for r in records if r["attack"] == "clean" and r["features"]["ids"])
    assert one == two
    assert any(x.exact_radius_255 > 0 for x in two)  # the relinked radii are measured, not zero
    with pytest.raises(ConfigError, match="in both"):
        pooled_records([whole, halves[1]])
    with pytest.raises(ConfigError, match="holds no records"):
        pooled_records([tmp_path])


def test_the_gate_choice_is_the_lowest_that_keeps_the_deep_heads_accuracy():
    from retlink.train.certified_gate import HeldOut, choose_gate, gate_table

    links = [
        HeldOut("a", exact_right=True, exact_margin=5.0, deep_right=True),
        HeldOut("b", exact_right=True, exact_margin=2.2, deep_right=True),
        HeldOut("c", exact_right=False, exact_margin=1.2, deep_right=True),
        HeldOut("d", exact_right=False, exact_margin=0.1, deep_right=True),
    ]
    rows = {r["gate"]: r for r in gate_table(links, (0.5, 1.0, 2.0, 3.0))}
    assert rows[0.5] == {"gate": 0.5, "cascade": 75.0, "exact_answers": 75.0, "right_by_exact": 50.0}
    assert rows[2.0] == {"gate": 2.0, "cascade": 100.0, "exact_answers": 50.0, "right_by_exact": 50.0}
    assert rows[1.0]["cascade"] == 75.0  # c opens the gate and the exact head gets it wrong
    assert rows[3.0] == {"gate": 3.0, "cascade": 100.0, "exact_answers": 25.0, "right_by_exact": 25.0}
    assert choose_gate(links, gates=(0.5, 1.0, 2.0, 3.0)) == 2.0
    assert choose_gate(links, max_loss=25.0, gates=(0.5, 1.0, 2.0, 3.0)) == 0.5


@pytest.mark.slow
def test_the_adaptive_attack_on_the_cascades_own_features_breaks_no_certificate(demo_heads, demo_kb_path):
    """PGD through the cascade's own thumbnail, templates, image embedder and heads
    (`retlink.eval.experiments.certified_attack`), judged by the real pipeline, never breaks a
    certified answer; its differentiable features are the pipeline's."""
    from retlink.attacks.attacked import clean_tensor
    from retlink.datasets.base import Sample
    from retlink.eval.certified import CertifiedConfig, CertifiedLinker
    from retlink.eval.experiments.certified_attack import DifferentiableHeads, attack_sample, summarise
    from tests.defences.test_certified import DEMO, _examples

    _, deep_path, exact_path, _ = demo_heads
    options = {
        "text_candidates": 3,
        "deep": True,
        "head": str(deep_path),
        "exact_head": str(exact_path),
        "gate_margin": 1.0,
        "eps": ["8/255"],
    }
    cascade = CertifiedLinker.from_kb(demo_kb_path, CertifiedConfig.model_validate(options))
    samples = [
        Sample(
            id=k,
            split="demo",
            image_path=DEMO / e["image"],
            mention=e["mention"],
            context=e.get("context", ""),
            gold_id=e["gold"],
        )
        for k, e in _examples().items()
    ]
    first = samples[0]
    image = clean_tensor(first.image_path, 224)
    features = cascade.link(image, first.mention, first.context).features
    rows = DifferentiableHeads(cascade, features).feature_rows(image).detach().numpy()
    np.testing.assert_allclose(rows, np.asarray(features.rows), atol=1e-4)

    # on the demo most answers rest on text margins no image moves; the check here is that no
    # certified answer breaks (the attack's strength is measured on logos and on synthetic pools)
    budgets = [8 / 255, 64 / 255]
    rows = [attack_sample(cascade, s, budgets, steps=4) for s in samples[:6]]
    for label, summary in summarise(rows, budgets, None)["budgets"].items():
        assert summary["certified_but_broken"] == [], label
        assert summary["adaptive"]["value"] >= summary["certified"]["value"]
    # some answers were attacked unprotected
    assert any(r["clean"] and not r["certified"]["64/255"] for r in rows)

    # a second pass (APGD) keeps the first pass's breaks and leaves certified answers alone when asked
    k = next(i for i, r in enumerate(rows) if r["clean"] and r["certified"]["8/255"])
    first = {**rows[k], "attacks": {"8/255": None, "64/255": "a break recorded before"}}
    again = attack_sample(cascade, samples[k], budgets, 4, ("apgd",), skip_certified=True, before=first)
    assert again["attacks"] == {"8/255": None, "64/255": "a break recorded before"}

    # the radius gate: the attack aims at its worst-case margins and breaks no certificate either
    radius = CertifiedLinker.from_kb(
        demo_kb_path, CertifiedConfig.model_validate({**options, "gate_margin": None, "gate_radius": "2/255"})
    )
    rows = [attack_sample(radius, s, budgets, steps=4) for s in samples[:6]]
    for label, summary in summarise(rows, budgets, None)["budgets"].items():
        assert summary["certified_but_broken"] == [], label
    assert any(r["clean"] and not r["certified"]["64/255"] for r in rows)


def test_features_computed_another_way_are_refused_by_the_head_and_the_resumed_run(demo_heads, demo_kb_path, tmp_path):
    """The same feature names computed with other parameters (a template size, the thumbnail
    side) are other features: a head fitted on them is refused, as is a resumed run's next link.
    Faults injected: the head file and the recorded links rewritten with another definition."""
    import json

    from retlink.core.errors import ConfigError
    from retlink.eval.certified import CertifiedConfig, CertifiedLinker, feature_definition
    from retlink.eval.config import load_eval_config
    from retlink.eval.runner import Runner
    from retlink.eval.runs import RESULTS
    from tests.defences.test_certified import _run_config

    _, _, exact_path, exact_head = demo_heads
    assert exact_head.feature_definition == feature_definition(8)  # carried from the links it was fitted on
    assert feature_definition(8) != feature_definition(16)
    options = {"text_candidates": 3, "eps": ["8/255"]}
    other = tmp_path / "other.head.json"
    data = json.loads(exact_path.read_text())
    other.write_text(json.dumps({**data, "feature_definition": "0123456789abcdef"}))
    with pytest.raises(ConfigError, match="fitted on features computed another way"):
        CertifiedLinker.from_kb(demo_kb_path, CertifiedConfig.model_validate({**options, "head": str(other)}))
    data.pop("feature_definition")  # a head fitted before definitions were recorded still loads
    other.write_text(json.dumps(data))
    CertifiedLinker.from_kb(demo_kb_path, CertifiedConfig.model_validate({**options, "head": str(other)}))

    cfg = {**_run_config(demo_kb_path, tmp_path), "attacks": [], "record_features": True}
    cfg["dataset"]["limit"] = 2
    Runner(load_eval_config(cfg)).run(progress=False)
    results = tmp_path / "certified" / RESULTS
    first = results.read_text().splitlines()[0]
    assert f'"definition":"{feature_definition(8)}"' in first.replace(" ", "")
    results.write_text(first.replace(feature_definition(8), "0123456789abcdef") + "\n")
    with pytest.raises(ConfigError, match=r"computed another way.*Start the run afresh"):
        Runner(load_eval_config(cfg)).run(progress=False)
    assert len(results.read_text().splitlines()) == 1  # nothing appended
