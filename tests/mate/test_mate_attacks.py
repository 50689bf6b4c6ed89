"""`retlink mate run` with `attacks:`: the eval module's image attacks on MATE scenes.

Real attacks on a real rendered set: Square (score-based) on the binding agent's own perception
and FGSM crafted on EfficientNet-Lite0 (a transfer attack), images stored like the eval runner's,
records per attack, resume without remaking an image; the attacked PNG reaching a served VLM over
a real loopback HTTP server; and the config validated at load.
"""

from __future__ import annotations

import base64
import json
from http import HTTPStatus

import numpy as np
import pytest
from PIL import Image

from retlink.attacks.attacked import AttackedStore, file_stem
from retlink.core.errors import ConfigError
from retlink.eval.runs import RESULTS, read_records
from retlink.mate.harness import MateRunner, load_mate_config
from retlink.mate.report import write_report
from tests.loopback import LoopbackHTTP, QuietHandler

EPS = 8  # /255, both attacks' budget
ATTACKS = [
    {"name": "square", "attack": "square", "target": "perception", "params": {"n_queries": 20}},
    {"name": "fgsm-lite0", "attack": "fgsm", "target": "embedding_away", "surrogate": "efficientnet_lite0"},
]


def _config(tmp_path, data, **extra) -> dict:
    return {"name": "atk", "data": {"path": str(data)}, "models": [{"name": "agent", "kind": "binding_agent"}],
            "splits": ["cross"], "output_dir": str(tmp_path / "runs"), "concurrency": 2, **extra}


class Stop(Exception):
    """Raised from on_record to interrupt a run between records."""


@pytest.mark.slow
def test_attacks_on_the_binding_agent_record_resume_and_report(tmp_path, mate_set_dir):
    cfg = load_mate_config(_config(tmp_path, mate_set_dir, limit=4, attacks=ATTACKS))
    run_dir = cfg.run_dir()
    seen = []

    def interrupt(rec):
        seen.append(rec)
        if rec["attack"] == "fgsm-lite0":  # square done, FGSM images made, one answer recorded
            raise Stop

    with pytest.raises(Stop):
        MateRunner(cfg).run(progress=False, on_record=interrupt)
    stores = {a["name"]: AttackedStore(run_dir, a["name"]) for a in ATTACKS}
    made = {name: {p.name: p.stat().st_mtime_ns for p in s.dir.glob("*.pt")} for name, s in stores.items()}
    assert all(len(v) == 4 for v in made.values()), made  # the set's scenes: one image a question

    counts = MateRunner(cfg).run(progress=False)
    assert counts == {"planned": 12, "ran": 12 - len(seen), "failed": 0, "images": 0}
    assert {name: {p.name: p.stat().st_mtime_ns for p in s.dir.glob("*.pt")} for name, s in stores.items()} == made
    assert MateRunner(cfg).run(progress=False) == {"planned": 12, "ran": 0, "failed": 0, "images": 0}

    records = read_records(run_dir / RESULTS)
    by_attack: dict[str, list[dict]] = {}
    for r in records.values():
        by_attack.setdefault(r["attack"], []).append(r)
    assert {a: len(v) for a, v in by_attack.items()} == {"clean": 4, "square": 4, "fgsm-lite0": 4}
    questions = {q.id: q for q in MateRunner(cfg).questions(MateRunner(cfg).dataset())}
    for name, store in stores.items():
        for r in by_attack[name]:
            assert r["status"] == "ok" and 0 < r["norms_png"]["linf_255"] <= EPS + 1e-4, r
            q = questions[r["question_id"]]
            clean = np.asarray(Image.open(mate_set_dir / "scenes" / f"{q.scene}.png").convert("RGB"), dtype=int)
            png = store.dir / f"{file_stem(q.scene)}.png"
            attacked = np.asarray(Image.open(png).convert("RGB"), dtype=int)
            diff = np.abs(attacked - clean)
            assert attacked.shape == clean.shape and 0 < diff.max() <= EPS, (name, diff.max())

    summary = write_report(run_dir)
    rob = summary["robustness"]["agent · tools"]
    assert set(rob) == {"square", "fgsm-lite0"}
    for cell in rob.values():
        assert cell["n"] == 4 and cell["clean"]["n"] == 4 and cell["linf_255_png"]["max"] <= EPS + 1e-2
        assert cell["drop"] == pytest.approx(cell["clean"]["accuracy"] - cell["attacked"]["accuracy"], abs=1e-4)
    # the score-based attack stops at the first scene it reads differently: it must hurt
    assert rob["square"]["drop"] > 0 and rob["square"]["attack_success_rate"] > 0
    report = (run_dir / "report.md").read_text()
    assert "## Robustness (cross-modal)" in report and "perception (score-based)" in report
    assert summary["rows"]["agent · tools"]["n"] == 4  # the clean table holds the clean records only


class OpenAIish(QuietHandler):
    """An OpenAI-compatible endpoint on loopback that records each chat request and answers
    a fixed colour (the VLM is not what is tested: which image it was sent is)."""

    def do_GET(self) -> None:
        self.send_body(HTTPStatus.OK, "application/json", json.dumps({"object": "list", "data": [{"id": "vlm", "object": "model"}]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.record(self.path, body)
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": "vlm",
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": '{"answer": "red"}'}}]}
        self.send_body(HTTPStatus.OK, "application/json", json.dumps(reply).encode())


@pytest.mark.slow
def test_a_served_vlm_is_sent_the_attacked_png(tmp_path, mate_set_dir):
    with LoopbackHTTP(OpenAIish) as srv:
        cfg = load_mate_config(_config(tmp_path, mate_set_dir, limit=2, models=[
            {"name": "vlm", "kind": "openai", "model": "vlm", "base_url": srv.url("/v1"), "max_retries": 0}],
            attacks=[{"name": "noise", "attack": "gaussian_noise", "params": {"eps": "4/255"}}]))
        assert MateRunner(cfg).run(progress=False)["ran"] == 4
        sent = []
        for body in srv.bodies:
            parts = body["messages"][-1]["content"]
            url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
            sent.append(base64.b64decode(url.split(",", 1)[1]))
    store = AttackedStore(cfg.run_dir(), "noise")
    attacked = {p.read_bytes() for p in store.dir.glob("*.png")}
    clean = {p.read_bytes() for p in (mate_set_dir / "scenes").glob("*.png")}
    assert len(attacked) == 2 and attacked <= set(sent) and len(set(sent) & clean) == 2


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ({"name": "p", "attack": "pgd", "target": "perception"}, "no gradient"),
        ({"name": "p", "attack": "pgd", "target": "embedding_toward_distractor"}, "target"),
        ({"name": "a", "attack": "adaptive", "target": "embedding_away"}, "not available on MATE"),
        ({"name": "t", "attack": "text", "target": "embedding_away"}, "not available on MATE"),
        ({"name": "clean", "attack": "square"}, "cannot be named 'clean'"),
        ({"name": "s", "attack": "square", "params": {"steps": 3}}, "unknown parameter"),
        ({"name": "s", "attack": "square", "preset": "mat"}, "no preset"),
        ({"name": "s", "attack": "nope"}, "unknown attack"),
        ({"name": "s", "attack": "fgsm", "target": "embedding_away", "surrogate": "resnet"}, "unknown network"),
    ],
)
def test_attack_configs_are_validated_at_load(tmp_path, attack, message):
    with pytest.raises(ConfigError, match=message):
        load_mate_config(_config(tmp_path, tmp_path / "set", attacks=[attack]))


def test_attack_names_are_unique_and_change_the_fingerprint(tmp_path):
    two = [{"name": "s", "attack": "square"}, {"name": "s", "attack": "gaussian_noise"}]
    with pytest.raises(ConfigError, match=r"attacks: duplicate name\(s\) s"):
        load_mate_config(_config(tmp_path, tmp_path / "set", attacks=two))
    plain = load_mate_config(_config(tmp_path, tmp_path / "set"))
    attacked = load_mate_config(_config(tmp_path, tmp_path / "set", attacks=two[:1]))
    assert attacked.attacks[0].target == "perception" and attacked.attacks[0].resolved_params()["n_queries"] == 100
    assert plain.fingerprint() != attacked.fingerprint()


def test_bundled_mate_configs_validate():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "src" / "retlink" / "eval" / "configs").rglob("mate-*.yaml"))
    assert len(configs) >= 3
    loaded = {p.stem: load_mate_config(p) for p in configs}
    assert [a.target for a in loaded["mate-binding-attacks"].attacks][:2] == ["perception", "perception"]
