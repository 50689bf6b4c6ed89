"""The CLI in-process (typer's runner shares the session's loaded models) and one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from retlink.cli import app
from tests.conftest import REPO, fast_config

runner = CliRunner()


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory, demo_kb_path):
    path = tmp_path_factory.mktemp("cfg") / "test.yaml"
    path.write_text(yaml.safe_dump(fast_config(demo_kb_path)))
    return path


def test_link_json(cfg_file, demo_dir):
    res = runner.invoke(
        app,
        ["link", str(demo_dir / "images" / "coffee.jpg"), "--mention", "Java", "--context", "A cup of [Java].", "--json", "-c", str(cfg_file)],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["entity"]["id"] == "java_coffee"
    assert {"score", "candidates", "caption", "evidence", "rationale", "trace"} <= set(data)


def test_link_human_output(cfg_file, demo_dir):
    res = runner.invoke(app, ["link", str(demo_dir / "images" / "brick.jpg"), "-m", "Brick", "-c", str(cfg_file)])
    assert res.exit_code == 0, res.output
    assert "Brick -> Brick (brick)" in res.stdout


def test_link_text_only(cfg_file):
    res = runner.invoke(app, ["link", "-m", "Luna", "--context", "The craters of [Luna] tonight.", "--json", "-c", str(cfg_file)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    # the alias table and the sentence alone put the Moon first (the answer is the LLM's call)
    assert data["candidates"][0]["entity"]["id"] == "moon" and data["caption"] is None
    assert all(c["image_score"] is None for c in data["candidates"])
    assert next(e for e in data["trace"] if e["node"] == "caption")["skipped"].startswith("no image")


@pytest.mark.parametrize(
    "args, message",
    [
        (["link", "/nonexistent.jpg", "-m", "x"], "image file not found"),
        (["link", "{notes}", "-m", "x"], "not an image"),
        (["link", "-m", "  "], "nothing to link"),
        (["link", "{image}", "-m", "x", "-c", "{badcfg}"], "kb.colour: unknown key"),
        (["kb", "build", "/nonexistent.jsonl", "--out", "{tmp}/kb"], "entities file not found"),
        (["kb", "query", "{tmp}/nokb", "hello"], "no knowledge base"),
        (["kb", "query", "http://127.0.0.1:9/kb", "hello"], "cannot reach the chroma server at http://127.0.0.1:9"),
        (["kb", "query", "http://127.0.0.1:9/", "hello"], "http://HOST:PORT/NAME"),
    ],
)
def test_bad_input_exits_2_without_traceback(args, message, tmp_path, demo_dir):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    badcfg = tmp_path / "bad.yaml"
    badcfg.write_text("kb:\n  colour: blue\n")
    subs = {"notes": notes, "image": demo_dir / "images" / "coffee.jpg", "badcfg": badcfg, "tmp": tmp_path}
    res = runner.invoke(app, [a.format(**subs) for a in args])
    assert res.exit_code == 2
    assert message in res.stderr
    assert "Traceback" not in res.output + res.stderr


def test_kb_build_and_query(tmp_path, demo_dir):
    out = tmp_path / "kb"
    res = runner.invoke(app, ["kb", "build", str(demo_dir / "entities.jsonl"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "39 entities" in res.stdout
    res = runner.invoke(app, ["kb", "query", str(out), "Falcon", "-k", "3"])
    assert res.exit_code == 0 and "falcon" in res.stdout.lower()


def test_console_script_reports_errors_cleanly(tmp_path):
    """The installed entry point, in a real process: exit code 2, one line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "retlink.cli", "link", str(tmp_path / "missing.png"), "--mention", "x"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 2
    assert "image file not found" in proc.stderr and "Traceback" not in proc.stderr
