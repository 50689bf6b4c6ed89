"""The defence evaluation as runner pipelines: the tagger and retrieval levels on the graph's own
defence route, `attack: adaptive` derived from each pipeline's defences, the per-sample worst
case, the detector scored in the report, the CLI alias, and MAT's multimodal attack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from retlink.attacks.adaptive import adaptive_attacks
from retlink.attacks.attacked import AttackedStore
from retlink.core.errors import ConfigError
from retlink.core.schema import DefenceConfig
from retlink.core.types import Candidate, Entity, LinkResult
from retlink.eval.config import load_eval_config
from retlink.eval.levels import defended_view
from retlink.eval.metrics import roc_auc
from retlink.eval.runner import Runner, worst_case
from retlink.eval.variants import attack_variants
from retlink.tools.vision.detector import SqueezeDetector
from retlink.tools.vision.efficientnet import shared_model

PURIFY = {"defence": {"purify": [{"kind": "median", "size": 3}]}}
DETECT = {"defence": {"detector": {"enabled": True}}}
#: ImageNet classes a tagger may give the demo's tabby cat (ex01, chelsea.jpg)
CATS = {"tabby", "tiger cat", "Egyptian cat"}


def levels_config(kb_path: Path, out: Path, **extra) -> dict:
    """Tagger and retrieval levels, each bare, purified and detecting; 1-step PGD and adaptive."""
    pipes = []
    for kind in ("tagger", "retrieval"):
        pipes += [
            {"name": kind, "kind": kind},
            {"name": f"{kind}-purify", "kind": kind, "overrides": PURIFY},
            {"name": f"{kind}-detect", "kind": kind, "overrides": DETECT},
        ]
    cfg = {
        "name": "levels",
        "dataset": {"key": "demo", "split": "test", "limit": 2},
        "kb": {"path": str(kb_path)},
        "pipelines": pipes,
        "attacks": [
            {"name": "pgd-8", "attack": "pgd", "params": {"eps": "8/255", "steps": 1}},
            {"name": "adaptive-8", "attack": "adaptive", "params": {"eps": "8/255", "steps": 1, "eot_samples": 1}},
        ],
        "metrics": {"bootstrap_resamples": 20},
        "output_dir": str(out),
    }
    cfg.update(extra)
    return cfg


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines() if line.strip()]


def test_adaptive_attacks_follow_the_defence_config():
    assert adaptive_attacks(DefenceConfig(), 4) == []
    purify = DefenceConfig.model_validate({"purify": [{"kind": "median", "size": 3}]})
    assert [n for n, _ in adaptive_attacks(purify, 4)] == ["pgd_eot"]
    detect = DefenceConfig.model_validate({"detector": {"enabled": True, "threshold": 0.9}})
    (aware, aware_kw), (eot, eot_kw) = adaptive_attacks(detect, 4)
    assert aware == "pgd_detector_aware" and aware_kw["purify"] == [] and aware_kw["threshold"] == 0.9
    assert eot == "pgd_eot" and eot_kw["purify"][0]["kind"] == "jpeg"  # the flagged route's purifier


def test_adaptive_expands_per_pipeline_from_its_own_defence(tmp_path):
    cfg = load_eval_config(
        {
            **levels_config(tmp_path / "kb", tmp_path),
            "pipelines": [
                {"name": "baseline", "kind": "baseline"},
                {"name": "a", "kind": "agent", "overrides": {"defence": {"detector": {"enabled": True, "threshold": 0.7}}}},
                {"name": "b", "kind": "retrieval", "overrides": {"defence": {"detector": {"enabled": True, "threshold": 0.7}}}},
            ],
        }
    )
    variants = attack_variants(cfg, cfg.attack("adaptive-8"))
    by_attack = {v.spec.attack: (key, v.spec, v.pipelines) for key, v in variants.items()}
    assert set(by_attack) == {"pgd", "pgd_detector_aware", "pgd_eot"}
    assert by_attack["pgd"][2] == ["baseline", "a", "b"]  # plain PGD: every pipeline faces it
    key, aware, pipes = by_attack["pgd_detector_aware"]
    assert pipes == ["a", "b"]  # one set of images for the two pipelines with the same defence
    assert aware.params["threshold"] == 0.7 and aware.params["eps"] == pytest.approx(8 / 255)  # not hand-copied
    assert aware.params["eot_samples"] == 1
    assert key.startswith("pgd_detector_aware-") and "/" not in key
    assert by_attack["pgd"][1] is cfg.attack("pgd-8")  # the same parameters: pgd-8's own images
    assert variants[by_attack["pgd"][0]].store == "pgd-8"
    assert variants[key].store == f"adaptive-8/{key}"
    plain = attack_variants(cfg, cfg.attack("pgd-8"))
    assert list(plain) == [""] and plain[""].spec is cfg.attack("pgd-8") and plain[""].store == "pgd-8"


def _result(answer: str, flagged: bool) -> LinkResult:
    ents = {i: Entity(id=i, name=i) for i in ("g", "x")}
    return LinkResult(
        entity=ents[answer],
        score=0.5,
        decided_by="fallback",
        mention="",
        candidates=[Candidate(entity=ents[answer], score=0.5)],
        perturbed=flagged,
    )


def test_worst_case_prefers_an_unflagged_miss():
    right, flagged_miss, miss = _result("g", False), _result("x", True), _result("x", False)
    assert worst_case([("pgd", {}, right), ("eot", {}, flagged_miss), ("aware", {}, miss)], "g")[0] == "aware"
    assert worst_case([("pgd", {}, right), ("eot", {}, flagged_miss)], "g")[0] == "eot"
    assert worst_case([("pgd", {}, right), ("eot", {}, right)], "g")[0] == "pgd"


def test_defended_view_takes_the_graph_route(demo_dir):
    img = Image.open(demo_dir / "images" / "coffee.jpg").convert("RGB").resize((224, 224))
    cfg = DefenceConfig.model_validate({"detector": {"enabled": True, "threshold": 0.0}})
    view, flagged, trace = defended_view(img, cfg, SqueezeDetector(shared_model(), cfg.detector.squeezers))
    assert flagged and view.tobytes() != img.tobytes()  # flagged, then purified (JPEG 75)
    assert [e.node for e in trace] == ["detect", "purify"] and trace[1].detail["steps"] == ["jpeg(75)"]
    off, flagged, trace = defended_view(img, DefenceConfig(), None)
    assert not flagged and off is img and trace[0].skipped == "detector disabled"


@pytest.mark.slow  # 1-step attacks on 2 photos, 6 pipelines (about 40 s on 2 cores)
def test_levels_run_in_the_runner_with_derived_adaptive_attacks(tmp_path, demo_kb_path):
    from retlink.eval.report import write_report

    runner = Runner(load_eval_config(levels_config(demo_kb_path, tmp_path)), tmp_path / "run")
    runner.run(progress=False)
    recs = _records(runner.dir)
    assert len(recs) == 2 * 6 * 3 and all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    by = {(r["pipeline"], r["attack"], r["sample_id"]): r for r in recs}
    # the tagger's gold is the bare network's clean label: a cat for Chelsea
    tagger = runner.pipeline("tagger")
    gold = by[("tagger", "clean", "demo:ex01")]["gold"]
    assert gold.startswith("imagenet:") and tagger.labels[int(gold.split(":")[1])] in CATS
    # retrieval: each clean photo retrieves its own entity, by the KB's image embedder
    assert by[("retrieval", "clean", "demo:ex01")]["pred"] == "chelsea_cat"
    assert by[("retrieval", "clean", "demo:ex02")]["pred"] == "java_coffee"
    # adaptive: the detecting pipelines face PGD, detector-aware PGD and EOT through the flagged
    # route's JPEG; the purifying ones PGD and EOT through their median filter; the bare ones PGD
    adaptive = by[("retrieval-detect", "adaptive-8", "demo:ex01")]
    assert sorted(k.split("-")[0] for k in adaptive["variants"]) == ["pgd", "pgd_detector_aware", "pgd_eot"]
    # the worst case, checked against what the runner recorded elsewhere: each adaptive record's
    # plain-PGD variant faced pgd-8's stored image, so its verdict is the pgd-8 record's (linked
    # as its own job); the variant a record names is one that broke it when any did, and its
    # prediction is that variant's
    adaptive_recs = [r for r in recs if r["attack"] == "adaptive-8" and "variants" in r]
    assert len(adaptive_recs) == 2 * 4  # the purifying and detecting pipelines, both photos
    for rec in adaptive_recs:
        plain = by[(rec["pipeline"], "pgd-8", rec["sample_id"])]
        pgd_key = next(k for k in rec["variants"] if k.split("-")[0] == "pgd")
        assert rec["variants"][pgd_key] == plain["correct"], (rec, plain)
        assert rec["variant"] in rec["variants"] and rec["variants"][rec["variant"]] == rec["correct"], rec
        assert rec["correct"] == (rec["pred"] == rec["gold"]) == all(rec["variants"].values()), rec
        if rec["variant"] == pgd_key:
            assert rec["pred"] == plain["pred"], (rec, plain)
    assert sorted(k.split("-")[0] for k in by[("tagger-purify", "adaptive-8", "demo:ex01")]["variants"]) == [
        "pgd",
        "pgd_eot",
    ]
    assert "variants" not in by[("tagger", "adaptive-8", "demo:ex01")]
    stores = sorted(p.name.split("-")[0] for p in (runner.dir / "attacked" / "adaptive-8").iterdir())
    assert stores == ["pgd_detector_aware", "pgd_eot", "pgd_eot"]  # JPEG and median: two EOTs; PGD is pgd-8's
    # the detector: scores on every record of a detecting pipeline, none elsewhere
    assert all("detector_score" in r for r in recs if r["pipeline"].endswith("-detect"))
    assert not any("detector_score" in r for r in recs if not r["pipeline"].endswith("-detect"))
    summary = write_report(runner.dir, plots=False)
    det = summary["detectors"]["it2t"]["retrieval-detect"]["pgd-8"]
    rec = {a: [by[("retrieval-detect", a, f"demo:ex0{i}")] for i in (1, 2)] for a in ("clean", "pgd-8")}
    assert det == {
        "n": 2,
        "roc_auc": round(roc_auc(*([r["detector_score"] for r in rec[a]] for a in ("clean", "pgd-8"))), 4),
        "fpr_clean": sum(r["flagged"] for r in rec["clean"]) / 2,
        "detection_rate": sum(r["flagged"] for r in rec["pgd-8"]) / 2,
    }, (det, rec)
    report = (runner.dir / "report.md").read_text()
    assert "## Detectors" in report and "| it2t | tagger-detect | pgd-8 |" in report
    # resumable like every run: nothing left to do, no attacked image remade
    before = {p: p.stat().st_mtime_ns for p in (runner.dir / "attacked").rglob("*.pt")}
    plan = Runner(load_eval_config(levels_config(demo_kb_path, tmp_path)), tmp_path / "run").run(progress=False)
    assert not plan.todo and before == {p: p.stat().st_mtime_ns for p in (runner.dir / "attacked").rglob("*.pt")}


def test_text_only_is_refused_for_pipelines_that_need_an_image(tmp_path):
    with pytest.raises(ConfigError, match=r"text_only removes the image.*tagger"):
        load_eval_config({**levels_config(tmp_path, tmp_path), "settings": ["text_only"]})
    cfg = load_eval_config(
        {
            **levels_config(tmp_path, tmp_path),
            "pipelines": [{"name": "baseline", "kind": "baseline"}, {"name": "tagger", "kind": "tagger"}],
            "settings": [{"name": "t", "setting": "text_only", "pipelines": ["baseline"]}],
        }
    )
    assert cfg.pipelines_in(cfg.settings[0]) == ["baseline"]


def test_composite_attacks_validate_their_parameters(tmp_path):
    base = levels_config(tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="eot_samplez"):
        load_eval_config({**base, "attacks": [{"name": "a", "attack": "adaptive", "params": {"eot_samplez": 1}}]})
    with pytest.raises(ConfigError, match="no preset 'mat'"):
        load_eval_config({**base, "attacks": [{"name": "a", "attack": "cw", "preset": "mat"}]})
    cfg = load_eval_config({**base, "attacks": [{"name": "m", "attack": "multimodal", "preset": "mat"}]})
    params = cfg.attack("m").resolved_params()
    assert params["eps"] == pytest.approx(2 / 255) and params["steps"] == 2  # MAT's PGD


def test_cli_defences_runs_a_runner_config(tmp_path, demo_kb_path):
    from typer.testing import CliRunner

    from retlink.cli import app

    cfg = levels_config(demo_kb_path, tmp_path)
    cfg["pipelines"] = [{"name": "tagger-detect", "kind": "tagger", "overrides": DETECT}]
    cfg["attacks"] = cfg["attacks"][:1]
    path = tmp_path / "defences.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["eval", "defences", str(path), "-n", "1", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "## Detectors" in (tmp_path / "out" / "report.md").read_text()
    bad = CliRunner().invoke(app, ["eval", "defences", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "not found" in bad.output


@pytest.mark.slow  # MAT's 2-step PGD, the in-process SmolLM2 proposing words, MiniLM scoring them
def test_text_and_multimodal_attacks_edit_the_sentence_in_a_run(tmp_path, demo_kb_path):
    cfg = {
        **levels_config(demo_kb_path, tmp_path),
        "pipelines": [{"name": "baseline", "kind": "baseline"}],
        "attacks": [
            {"name": "text", "attack": "text"},  # LM candidates, one substitution
            {"name": "mat", "attack": "multimodal", "preset": "mat"},
        ],
    }
    runner = Runner(load_eval_config(cfg), tmp_path / "run")
    runner.run(progress=False)
    recs = {(r["attack"], r["sample_id"]): r for r in _records(runner.dir)}
    samples = {s.id: s for s in runner.samples()}
    for attack, budget in (("text", 0), ("mat", 2)):
        for sid, s in samples.items():
            rec = recs[(attack, sid)]
            subs = rec["substitutions"]
            assert rec["status"] == "ok" and rec["norms"]["linf_255"] <= budget + 1e-3  # text: the image untouched
            _, meta = AttackedStore(runner.dir, attack).load(sid)
            before, after = s.context.split(), meta["context"].split()
            changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
            assert changed == [e["position"] for e in subs] and len(subs) <= 1
            assert all(before[e["position"]] == e["original"] for e in subs)
            assert rec["margin"]["attacked"] >= rec["margin"]["clean"]  # greedy: never worse for the attacker
            assert meta["sentence_similarity"] >= 0.7 - 1e-6  # BERT-Attack's filter, the default threshold
        assert any(recs[(attack, sid)]["substitutions"] for sid in samples)
