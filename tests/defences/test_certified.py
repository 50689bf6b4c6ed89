"""Certified image evidence: the thumbnail certificate holds against the strongest attacks on its
features (the exact vertex attack on the thumbnail, PGD on the pixels) and is tight; the
`certified` pipeline links the demo with certificates that PGD on its own features cannot break;
an eval run reports certified Hits@1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retlink.attacks.attacked import clean_tensor
from retlink.attacks.pgd import PGD
from retlink.attacks.targets import Target
from retlink.core.errors import ConfigError
from retlink.eval.certified import CertifiedConfig, CertifiedLinker
from retlink.eval.config import load_eval_config
from retlink.eval.runner import Runner
from retlink.tools.vision.certified import (
    MAX_RADIUS,
    certified_radius,
    certify,
    thumbnail,
    vertex_attack,
)
from retlink.tools.vision.efficientnet import preprocess

DEMO = Path(__file__).resolve().parents[2] / "src" / "retlink" / "data" / "demo"


def _nearest(query: np.ndarray, cands: np.ndarray) -> int:
    return int(np.argmin(((cands - query) ** 2).sum(axis=1)))


def _random_case(rng: np.random.Generator, dim: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A query and 2-6 candidates around it (spread so that radii fall around a few 1/255)."""
    query = rng.uniform(0.2, 0.8, dim)
    cands = np.clip(query + rng.normal(0, rng.uniform(0.02, 0.2), (int(rng.integers(2, 7)), dim)), 0, 1)
    return query, cands


# -- the certificate on thumbnails ------------------------------------------------------------


def test_certificate_survives_the_vertex_attack_and_is_tight():
    """For 2,000 random cases: a certified answer is never flipped by the exact worst-case
    perturbation against any rival, and an uncertified one with radius r is flipped by it at an
    eps just above r (the bound is exact on the thumbnail)."""
    rng = np.random.default_rng(0)
    certified = uncertified = 0
    for _ in range(2000):
        query, cands = _random_case(rng)
        eps = certified_radius(query, cands)[1] * float(rng.uniform(0, 2))  # half below, half above
        cert = certify(query, cands, eps)
        assert cert.best == _nearest(query, cands)
        assert cert.certified == (eps < cert.radius) or abs(eps - cert.radius) < 1e-9
        best = cands[cert.best]
        if cert.certified:
            certified += 1
            for j in range(len(cands)):
                if j != cert.best:
                    attacked = vertex_attack(query, best, cands[j], eps)
                    assert np.abs(attacked - query).max() <= eps + 1e-12
                    assert _nearest(attacked, cands) == cert.best, (eps, cert)
        else:
            uncertified += 1
            r = cert.radius
            # the rival that sets the radius, flipped just above it and not just below it
            d = ((cands - query) ** 2).sum(axis=1)
            l1 = np.abs(cands - best).sum(axis=1)
            rivals = [j for j in range(len(cands)) if j != cert.best]
            j = min(rivals, key=lambda k: (d[k] - d[cert.best]) / (2 * l1[k]) if l1[k] > 0 else 0.0)
            above = vertex_attack(query, best, cands[j], r * (1 + 1e-6) + 1e-12)
            assert ((cands[j] - above) ** 2).sum() < ((best - above) ** 2).sum(), (r, cert)
            if r > 1e-9:
                below = vertex_attack(query, best, cands[j], r * (1 - 1e-6))
                assert _nearest(below, cands) == cert.best
    # both kinds of case occurred often enough for the test to mean something
    assert certified > 700 and uncertified > 700, (certified, uncertified)


def test_certificate_edge_cases():
    q = np.zeros(3)
    # one candidate: the answer does not depend on the image at all
    assert certify(q, np.ones((1, 3)), 0.5) == (0, True, MAX_RADIUS)
    # a tie (two candidates at the same distance) certifies nothing, not even at eps 0
    tie = certify(q, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 0.0)
    assert tie.best == 0 and not tie.certified and tie.radius == 0.0
    # a duplicate thumbnail: radius 0, not a division by zero
    assert certified_radius(q, np.array([[1.0, 0, 0], [1.0, 0, 0]])) == (0, 0.0)
    # exact value: d = (1, 4), ||b1 - b0||_1 = 1 + 2 = 3, radius (4 - 1) / (2 * 3) = 0.5
    assert certified_radius(q, np.array([[1.0, 0, 0], [0, 2.0, 0]])) == (0, 0.5)
    with pytest.raises(ValueError):
        certified_radius(q, np.zeros((0, 3)))


# -- PGD on the pixels of a real image --------------------------------------------------------


class RivalMargin(Target):
    """Loss: the best rival's margin over the certified answer, d_best - min_j d_j (> 0: flipped),
    on the differentiable thumbnail of the pixels."""

    def __init__(self, cands: torch.Tensor, best: int, size: int) -> None:
        super().__init__(torch.nn.Identity())
        self.cands, self.best, self.size = cands, best, size

    def loss_and_success(self, x: torch.Tensor, y: object) -> tuple[torch.Tensor, torch.Tensor]:
        d = ((thumbnail(x, self.size)[:, None, :] - self.cands[None]) ** 2).sum(-1)
        rivals = torch.cat([d[:, : self.best], d[:, self.best + 1 :]], dim=1)
        margin = d[:, self.best] - rivals.min(dim=1).values
        return margin, margin > 0


def test_pgd_on_pixels_never_breaks_a_certificate_and_breaks_above_it():
    """PGD on the 32x32 pixels of a demo photo, through the 4x4 thumbnail, against KB thumbnails
    around it: below the certified radius it never flips the answer; at twice the radius it
    flips most cases (the attack is strong, so its failure below the radius means something)."""
    size = 4
    pixels = preprocess(Image.open(DEMO / "images" / "coffee.jpg"), 32).clamp(0.05, 0.95)  # room to move
    query = thumbnail(pixels, size).double().numpy()
    rng = np.random.default_rng(1)
    flipped_above = cases = 0
    for _ in range(60):
        if cases == 8:
            break
        cands = np.clip(query + rng.normal(0, 0.05, (int(rng.integers(2, 5)), query.size)), 0, 1)
        best, r = certified_radius(query, cands)
        if not 1 / 255 < r < 0.2:
            continue
        cases += 1
        target = RivalMargin(torch.tensor(cands, dtype=torch.float32), best, size)
        for eps, must_hold in ((0.95 * r, True), (2.0 * r, False)):
            attack = PGD(target, eps=eps, alpha=eps / 4, steps=30, restarts=2, seed=0)
            adv = attack(pixels.unsqueeze(0))[0]
            assert (adv - pixels).abs().max() <= eps + 1e-6
            answer = _nearest(thumbnail(adv, size).double().numpy(), cands)
            if must_hold:
                assert answer == best, (r, eps)
            else:
                flipped_above += answer != best
    assert cases == 8, cases
    assert flipped_above >= 6, (flipped_above, cases)


# -- the pipeline on the demo KB ----------------------------------------------------------------


def _examples() -> dict[str, dict]:
    rows = [json.loads(line) for line in (DEMO / "examples.jsonl").read_text().splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def test_certified_pipeline_links_the_demo_with_certificates(demo_kb_path):
    linker = CertifiedLinker.from_kb(demo_kb_path, CertifiedConfig.model_validate({"eps": ["2/255", "8/255", "16/255"]}))
    ex = _examples()
    # Falcon: two alias candidates with KB images; the rocket photo is nearest Falcon 9
    falcon = linker.link(clean_tensor(DEMO / ex["ex03"]["image"], 224), "Falcon")
    cert = falcon.trace[0].detail
    assert falcon.entity_id == "falcon_9" and [c.entity.id for c in falcon.candidates] == ["falcon_9", "falcon_heavy"]
    assert all(c.alias_match for c in falcon.candidates)
    assert 8 < cert["radius_255"] < 16 and cert["certified"] == {"2/255": True, "8/255": True, "16/255": False}
    assert "peregrine_falcon" in cert["without_image"]  # alias matches without a KB image cannot win by image
    # a mention no alias matches: NIL, said in the trace, and NIL whatever the image
    nil = linker.link(clean_tensor(DEMO / ex["ex03"]["image"], 224), "Zanzibar")
    assert nil.entity_id == "NIL" and nil.decided_by == "nil" and nil.trace[0].detail["nil"] == "no alias match"
    assert not nil.candidates and all(nil.trace[0].detail["certified"].values())


def test_pgd_below_the_radius_never_changes_a_demo_answer(demo_kb_path):
    """The project's PGD on the pipeline's own thumbnail features, through the 224 px pixels: at
    0.9 of each sample's certified radius no answer changes; at twice the radius it does (the
    attack could have broken a certificate that did not hold)."""
    linker = CertifiedLinker.from_kb(demo_kb_path)
    ex = _examples()
    checked = 0
    for sid, mention in (("ex03", "Falcon"), ("ex04", "Collins")):
        pixels = clean_tensor(DEMO / ex[sid]["image"], 224)
        clean = linker.link(pixels, mention)
        r = clean.trace[0].detail["radius_255"] / 255
        ents = [c.entity for c in clean.candidates]
        cands = torch.tensor(np.stack([linker.thumbs.get(e) for e in ents]), dtype=torch.float32)
        target = RivalMargin(cands, 0, linker.config.size)  # the answer is ranked first
        for eps, must_hold in ((0.9 * r, True), (2.0 * r, False)):
            adv = PGD(target, eps=eps, alpha=eps / 4, steps=20, seed=0)(pixels.unsqueeze(0))[0]
            assert (adv - pixels).abs().max() <= eps + 1e-6
            answer = linker.link(adv, mention).entity_id
            assert (answer == clean.entity_id) == must_hold, (sid, r * 255, eps * 255, answer)
        checked += 1
    assert checked == 2


# -- config and the eval run -------------------------------------------------------------------


def _run_config(kb_path: Path, out: Path, **options: object) -> dict:
    return {
        "name": "certified",
        "dataset": {"key": "demo", "split": "test", "limit": 4},
        "kb": {"path": str(kb_path)},
        "pipelines": [{"name": "certified", "kind": "certified", "options": {"eps": ["2/255", "8/255", "16/255"], **options}}],
        "attacks": [{"name": "pgd-8", "attack": "pgd", "params": {"eps": "8/255", "steps": 2}}],
        "metrics": {"bootstrap_resamples": 20},
        "output_dir": str(out),
    }


def test_bad_certified_options_are_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"eps"):
        load_eval_config(_run_config(tmp_path, tmp_path, eps=["300/255"]))
    with pytest.raises(ConfigError, match=r"siz"):
        load_eval_config(_run_config(tmp_path, tmp_path, siz=8))
    with pytest.raises(ConfigError, match=r"text_only removes the image.*certified"):
        load_eval_config({**_run_config(tmp_path, tmp_path), "settings": ["text_only"]})
    bad = _run_config(tmp_path, tmp_path)
    bad["pipelines"][0]["overrides"] = {"kb": {"top_k": 3}}
    with pytest.raises(ConfigError, match=r"certified pipelines take `options`"):
        load_eval_config(bad)


def test_eval_run_reports_certified_hits(tmp_path, demo_kb_path):
    from retlink.eval.report import write_report

    runner = Runner(load_eval_config(_run_config(demo_kb_path, tmp_path)), tmp_path / "run")
    runner.run(progress=False)
    recs = [json.loads(line) for line in (runner.dir / "results.jsonl").read_text().splitlines() if line.strip()]
    assert len(recs) == 8 and all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    by = {(r["attack"], r["sample_id"]): r for r in recs}
    clean = [by[("clean", f"demo:ex0{i}")] for i in range(1, 5)]
    # ex01, ex02: one alias candidate with an image (radius 255); ex03 right with a radius in
    # (8, 16); ex04 answered wrong (a certified wrong answer counts for nothing)
    assert [r["correct"] for r in clean] == [True, True, True, False]
    assert clean[0]["certified_radius_255"] == 255.0 and 8 < clean[2]["certified_radius_255"] < 16
    expected = {"2/255": 0.75, "8/255": 0.75, "16/255": 0.5}
    # a certificate at eps >= the attack's budget held on every sample under that attack
    for r in clean:
        if r["correct"] and r["certified_at"]["8/255"]:
            assert by[("pgd-8", r["sample_id"])]["pred"] == r["pred"]
    summary = write_report(runner.dir, plots=False)
    cell = summary["certified"]["it2t"]["certified"]["clean"]
    ci = cell.pop("certified_ci")
    assert cell == {"n": 4, "hits@1": 0.75, "certified_hits@1": expected}, cell
    # each certified share has its bootstrap CI over the 4 samples, around it
    assert set(ci) == set(expected) and all(lo <= expected[e] <= hi for e, (lo, hi) in ci.items()), ci
    assert ci["16/255"][0] < 0.5 < ci["16/255"][1]
    report = (runner.dir / "report.md").read_text()
    assert "## Certified Hits@1" in report
    row = f"| it2t | certified | clean | 75.0 | 75.0 [{100 * ci['2/255'][0]:.1f}, {100 * ci['2/255'][1]:.1f}] |"
    assert row in report, report


def test_a_resumed_run_refuses_links_whose_features_changed(tmp_path, demo_kb_path):
    """A run resumed after the code that computes a pipeline's features changed must not mix the
    two feature sets (a head trained on them would be fitted on both): the first new link with
    other features stops the run and nothing of it is appended. Fault injected: the recorded
    links are rewritten as if older code had named a feature differently."""
    from retlink.eval.runner import Runner
    from retlink.eval.runs import RESULTS

    cfg = {**_run_config(demo_kb_path, tmp_path), "attacks": [], "record_features": True}
    cfg["dataset"]["limit"] = 2
    Runner(load_eval_config(cfg)).run(progress=False)
    results = tmp_path / "certified" / RESULTS
    lines = results.read_text().splitlines()
    assert len(lines) == 2 and all('"template"' in line for line in lines)
    results.write_text(lines[0].replace('"template"', '"template-v0"') + "\n")  # older code's names; one link gone
    with pytest.raises(ConfigError, match=r"features changed since.*Start the run afresh"):
        Runner(load_eval_config(cfg)).run(progress=False)
    assert results.read_text().splitlines() == [lines[0].replace('"template"', '"template-v0"')]
    results.unlink()  # afresh: both links made again, with this code's features
    Runner(load_eval_config(cfg)).run(progress=False)
    assert len(results.read_text().splitlines()) == 2
