"""`retlink mate run` end to end with the binding agent: records, resume, report, CLI, errors.

(The served-VLM path runs against a real vLLM process in tests/vllm/test_vllm_mate.py.)
"""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from retlink.cli import app
from retlink.core.errors import BackendError, ConfigError
from retlink.eval.runs import RESULTS, read_records
from retlink.mate.harness import MateRunner, load_mate_config
from retlink.mate.report import write_report

pytestmark = pytest.mark.slow


def _config(tmp_path, data, **extra) -> dict:
    cfg = {"name": "t", "data": {"path": str(data)}, "models": [{"name": "agent", "kind": "binding_agent"}],
           "output_dir": str(tmp_path / "runs"), "concurrency": 2, **extra}
    return cfg


class Stop(Exception):
    """Raised from on_record to interrupt a run (what Ctrl-C does between records)."""


def test_run_resumes_and_reports(tmp_path, mate_set_dir):
    cfg = load_mate_config(_config(tmp_path, mate_set_dir, limit=10))
    seen = []

    def interrupt(rec):
        seen.append(rec)
        if len(seen) == 4:
            raise Stop

    with pytest.raises(Stop):
        MateRunner(cfg).run(progress=False, on_record=interrupt)
    run_dir = cfg.run_dir()
    assert len(read_records(run_dir / RESULTS)) == 4
    counts = MateRunner(cfg).run(progress=False)
    assert counts == {"planned": 10, "ran": 6, "failed": 0, "images": 0}
    records = read_records(run_dir / RESULTS)
    assert len(records) == 10 and all(r["status"] == "ok" for r in records.values())
    assert MateRunner(cfg).run(progress=False)["ran"] == 0  # nothing twice
    summary = write_report(run_dir)
    row = summary["rows"]["agent · tools"]
    assert row["n"] == 10 and row["cross_modal"]["accuracy"] >= 0.8
    assert (run_dir / "report.md").read_text().count("published, arXiv 2503.03854") == 5
    assert (run_dir / "plots" / "accuracy_by_objects.png").stat().st_size > 1000


def test_a_changed_config_refuses_the_old_folder(tmp_path, mate_set_dir):
    cfg = load_mate_config(_config(tmp_path, mate_set_dir, limit=2))
    MateRunner(cfg).run(progress=False)
    other = load_mate_config(_config(tmp_path, mate_set_dir, limit=2, splits=["cross"]))
    with pytest.raises(ConfigError, match="different config"):
        MateRunner(other).run(progress=False)


def test_cli_run_from_yaml(tmp_path, mate_set_dir):
    path = tmp_path / "mate.yaml"
    path.write_text(yaml.safe_dump({**_config(tmp_path, mate_set_dir), "splits": ["control"]}))
    result = CliRunner().invoke(app, ["mate", "run", str(path), "--limit", "3", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["rows"]["agent · tools"]["n"] == 3
    assert CliRunner().invoke(app, ["mate", "report", str(tmp_path / "r")]).exit_code == 0


def test_bad_configs_and_a_dead_server_are_clear_errors(tmp_path, mate_set_dir):
    with pytest.raises(ConfigError, match=r"models\[0\]"):
        load_mate_config({"name": "x", "data": {"path": str(mate_set_dir)}, "models": [{"name": "m", "kind": "openai"}]})
    with pytest.raises(ConfigError, match="unknown key"):
        load_mate_config({**_config(tmp_path, mate_set_dir), "shots": 2})
    dead = load_mate_config(_config(tmp_path, mate_set_dir, models=[
        {"name": "m", "kind": "openai", "model": "x", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0, "timeout_s": 2}]))
    with pytest.raises(BackendError, match="cannot reach"):
        MateRunner(dead).run(progress=False)
    result = CliRunner().invoke(app, ["mate", "run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "config file not found" in result.output


FORMATS = ["json", "yaml", "xml", "sentences"]


def test_the_agent_answers_every_text_format_alike(tmp_path, mate_set_dir):
    prompts = [{"name": f, "text_format": f} for f in FORMATS]
    cfg = load_mate_config(_config(tmp_path, mate_set_dir, limit=8, splits=["cross"], prompts=prompts))
    assert [p.name for p in cfg.agent_prompts()] == ["tools", "tools-yaml", "tools-xml", "tools-sentences"]
    assert MateRunner(cfg).run(progress=False)["ran"] == 32
    records = list(read_records(cfg.run_dir() / RESULTS).values())
    assert {r["text_format"] for r in records} == set(FORMATS)
    answers = {f: {r["question_id"]: r["prediction"] for r in records if r["text_format"] == f} for f in FORMATS}
    assert all(answers[f] == answers["json"] for f in FORMATS)  # the same reading of each format
    summary = write_report(cfg.run_dir())
    assert set(summary["rows"]) == {"agent · tools", "agent · tools-yaml", "agent · tools-xml", "agent · tools-sentences"}
    for row in summary["rows"].values():
        assert row["chance"]["cross_modal"] == pytest.approx(
            sum(r["chance"] for r in records if r["text_format"] == "json") / 8, abs=1e-4)
    table = summary["combinations"]
    assert table["questions"] == 8 and len(table["rows"]) == 25
    report = (cfg.run_dir() / "report.md").read_text()
    assert "| random |" in report and "## Linking attributes" in report and "| color + material + position |" in report


def test_an_unknown_text_format_names_its_key(tmp_path, mate_set_dir):
    with pytest.raises(ConfigError, match=r"prompts\[1\]\.text_format.*'json', 'yaml', 'xml' or 'sentences'"):
        load_mate_config(_config(tmp_path, mate_set_dir, prompts=[{"name": "a"}, {"name": "b", "text_format": "toml"}]))


def test_default_options_keep_the_fingerprint_of_older_runs(tmp_path, mate_set_dir):
    plain = load_mate_config(_config(tmp_path, mate_set_dir, prompts=[{"name": "p"}]))
    explicit = load_mate_config(_config(tmp_path, mate_set_dir, prompts=[{"name": "p", "text_format": "json", "reflect": False}]))
    other = load_mate_config(_config(tmp_path, mate_set_dir, prompts=[{"name": "p", "text_format": "xml"}]))
    assert plain.fingerprint() == explicit.fingerprint() != other.fingerprint()
