"""A served VLM's side of the MATE ablations over a real loopback HTTP server: the scene text in the
prompt's format, the self-reflection turn, and every bundled MATE config's `--dry-run` plan on
the fixture set (no server is contacted, nothing is built or downloaded)."""

from __future__ import annotations

import json
from http import HTTPStatus
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retlink.cli import app
from retlink.eval.runs import RESULTS, read_records
from retlink.mate.build import MateSet
from retlink.mate.harness import MateRunner, load_mate_config
from tests.loopback import LoopbackHTTP, QuietHandler

FIRST, SECOND = '{"answer": "Object_999"}', 'Checked again. {"answer": "red"}'
CONFIGS = sorted((Path(__file__).resolve().parents[2] / "src" / "retlink" / "eval" / "configs").rglob("mate-*.yaml"))


class Reflecting(QuietHandler):
    """An OpenAI-compatible endpoint that replies FIRST to a one-turn chat and SECOND to a longer
    one (the reflection turn), recording each request."""

    def do_GET(self) -> None:
        self.send_body(HTTPStatus.OK, "application/json", json.dumps({"object": "list", "data": [{"id": "vlm", "object": "model"}]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.record(self.path, body)
        content = FIRST if len(body["messages"]) == 1 else SECOND
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": "vlm",
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}
        self.send_body(HTTPStatus.OK, "application/json", json.dumps(reply).encode())


@pytest.mark.slow
def test_reflection_scores_the_second_reply_on_the_prompts_format(tmp_path, mate_set_dir):
    with LoopbackHTTP(Reflecting) as srv:
        cfg = load_mate_config({
            "name": "served", "data": {"path": str(mate_set_dir)}, "splits": ["cross"], "limit": 3,
            "output_dir": str(tmp_path / "runs"), "concurrency": 1,
            "models": [{"name": "vlm", "kind": "openai", "model": "vlm", "base_url": srv.url("/v1"), "max_retries": 0}],
            "prompts": [{"name": "plain", "text_format": "xml"}, {"name": "reflect", "text_format": "yaml", "reflect": True}],
        })
        assert MateRunner(cfg).run(progress=False)["ran"] == 6
        bodies = list(srv.bodies)
    assert len(bodies) == 3 + 2 * 3  # one turn each plain, two each reflecting
    firsts = [b["messages"][0]["content"][-1]["text"] for b in bodies]
    assert sum("The XML of the scene:\n<scene>" in t for t in firsts) == 3
    assert sum("The YAML of the scene:\nobjects:" in t for t in firsts) == 6
    second = [b for b in bodies if len(b["messages"]) == 3]
    assert len(second) == 3
    assert all(b["messages"][1] == {"role": "assistant", "content": FIRST} for b in second)
    assert all("Check your answer" in b["messages"][2]["content"] for b in second)
    records = list(read_records(cfg.run_dir() / RESULTS).values())
    reflected = [r for r in records if r["prompt"] == "reflect"]
    assert all(r["raw"] == SECOND and r["prediction"] == "red" and r["first_reply"] == FIRST for r in reflected)
    plain = [r for r in records if r["prompt"] == "plain"]
    assert all(r["raw"] == FIRST and "first_reply" not in r and r["text_format"] == "xml" for r in plain)


def test_the_bundled_configs_cover_the_ablations():
    names = {p.stem for p in CONFIGS}
    assert {"mate-formats", "mate-vllm-formats", "mate-vllm-reflection", "mate-vllm-internvl", "mate-vllm-llava-onevision"} <= names
    formats = load_mate_config(next(p for p in CONFIGS if p.stem == "mate-formats"))
    assert [p.text_format for p in formats.prompts] == ["json", "yaml", "xml", "sentences"]
    reflection = load_mate_config(next(p for p in CONFIGS if p.stem == "mate-vllm-reflection"))
    assert [p.reflect for p in reflection.prompts] == [False, True, False, True]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_bundled_config_dry_runs_on_the_fixture_set(path, tmp_path, mate_set_dir, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("RETLINK_CACHE", str(cache))
    cfg = load_mate_config(path)
    assert cfg.data.path.is_relative_to(cache), f"{path.name} reads {cfg.data.path}, outside $RETLINK_CACHE"
    cfg.data.path.parent.mkdir(parents=True)
    cfg.data.path.symlink_to(mate_set_dir)  # the fixture set stands in for the full one
    result = CliRunner().invoke(app, ["mate", "run", str(path), "--dry-run", "--limit", "5", "--out", str(tmp_path / "run")],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    n = len([q for q in MateSet(mate_set_dir).questions() if q.split in cfg.splits])
    assert f"{n} questions of" in result.output
    for m in cfg.models:
        assert m.name in result.output
    assert not (tmp_path / "run").exists()  # a plan writes nothing


def test_a_dry_run_builds_nothing_and_contacts_no_server(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(
        "name: plan\ndata: {path: missing-set}\nbuild: {n: 100, n_controls: 20, seed: 0, first: 60}\nsplits: [cross]\n"
        "models: [{name: vlm, kind: openai, model: m, base_url: 'http://127.0.0.1:9/v1'}, {name: agent, kind: binding_agent}]\n"
        "prompts: [{name: a}, {name: b, text_format: xml, reflect: true}]\n"
    )
    result = CliRunner().invoke(app, ["mate", "run", str(path), "--dry-run"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "about 50 questions" in result.output  # 60 of 120 sampled, 100 of them cross-modal
    assert "tools-xml" in result.output and not (tmp_path / "missing-set").exists()
