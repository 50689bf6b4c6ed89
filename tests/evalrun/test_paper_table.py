"""LLM-RetLink's table across runs (`retlink eval report RUN... --layout paper`): two real small
runs (the demo and a small icons build from the fixture icon sets, 3 TEST samples each, the CLIP-style baseline and the retrieval-only
agent, clean and FGSM, in I2T and IT2T) merged into one table with the report's own intervals;
the refusals (a run without records, two runs of one dataset, setting and pipeline); and the
bundled paper configs, which load and dry-run on the dataset fixtures through $RETLINK_DATA."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retlink.cli import app
from retlink.eval.paper import paper_table
from retlink.eval.report import write_report
from retlink.eval.runs import RESULTS, bootstrap_ci, read_records

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "src" / "retlink" / "eval" / "configs" / "paper"
FIXTURES = ROOT / "tests" / "fixtures" / "datasets"
ICON_SETS = ROOT / "tests" / "fixtures" / "iconify_sets"


def _config(name: str, dataset: dict, kb: dict, out: Path) -> dict:
    return {
        "name": name,
        "dataset": {**dataset, "split": "test", "limit": 3},
        "kb": kb,
        "pipelines": [
            {"name": "baseline", "kind": "baseline"},
            # the agent without its LLM (retrieval and decision features): the enhanced pipeline
            {"name": "agent", "kind": "agent", "overrides": {"reasoner": {"enabled": False}, "search": {"enabled": False}}},
        ],
        "attacks": [{"name": "fgsm-8", "attack": "fgsm", "params": {"eps": "8/255"}}],
        "settings": ["i2t", "it2t"],
        "metrics": {"bootstrap_resamples": 200},
        "concurrency": 2,
        "output_dir": str(out),
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, demo_kb_path):
    """A demo run and an icons run: the icons benchmark built here from the three fixture icon
    sets (a second dataset of another kind, built in seconds on any machine)."""
    from retlink.datasets.build import icons
    from retlink.eval.runner import run_config

    tmp = tmp_path_factory.mktemp("paper")
    icons.build(tmp / "icons", sources=ICON_SETS, progress=False, seed=1, samples=40, distractors=2, nil_share=0.1)
    runs = {}
    for name, dataset, kb in (
        ("demo", {"key": "demo"}, {"path": str(demo_kb_path)}),
        ("icons", {"key": "icons", "root": str(tmp / "icons")},
         {"path": str(tmp / "icons-kb"), "entities": str(tmp / "icons" / "entities.jsonl")}),
    ):
        runner, _ = run_config(_config(name, dataset, kb, tmp / "runs"))
        runs[name] = runner.dir
    return runs


def test_paper_table_merges_two_dataset_runs(two_runs, tmp_path):
    table = paper_table([two_runs["demo"], two_runs["icons"]])
    assert table.header[:2] == ["pipeline", "attack"]
    groups = table.header[2::4]
    assert groups == ["demo I2T clean", "demo IT2T clean", "icons I2T clean", "icons IT2T clean"]
    # one row: the baseline under FGSM (the agent is the enhanced pipeline, in the columns)
    assert [r[:2] for r in table.rows] == [["baseline", "fgsm-8"]]
    # every cell is the run's own report cell: Hits@1 and its seeded interval from the records
    for ds in ("demo", "icons"):
        records = read_records(two_runs[ds] / RESULTS).values()
        for cell in (c for c in table.cells if c["dataset"] == ds):
            pipe = "agent" if cell["part"] in ("+RE (rec)", "agent clean") else "baseline"
            cond = "clean" if cell["part"] in ("clean", "agent clean") else "fgsm-8"
            marks = {r["sample_id"]: float(r["correct"]) for r in records
                     if (r["pipeline"], r["setting"], r["attack"]) == (pipe, cell["setting"], cond)}
            ids = sorted(marks)
            assert cell["n"] == 3 and cell["hits@1"] == round(sum(marks.values()) / 3, 4)
            assert cell["hits@1_ci"] == [round(x, 4) for x in bootstrap_ci([marks[i] for i in ids], n_resamples=200, seed=0)]
            if cell["part"] == "+RE (rec)":  # paired over samples against the row's baseline
                base = {r["sample_id"]: float(r["correct"]) for r in records
                        if (r["pipeline"], r["setting"], r["attack"]) == ("baseline", cell["setting"], "fgsm-8")}
                diff = [marks[i] - base[i] for i in ids]
                assert cell["recovery"] == round(sum(diff) / 3, 4)
                assert cell["recovery_ci"] == [round(x, 4) for x in bootstrap_ci(diff, n_resamples=200, seed=2)]
    assert len(table.cells) == 16  # 2 datasets x 2 settings x 4 parts
    # the CLI: both runs' reports rebuilt, the merged table printed and written
    out = tmp_path / "paper.md"
    res = CliRunner().invoke(
        app, ["eval", "report", str(two_runs["demo"]), str(two_runs["icons"]), "--layout", "paper", "--out", str(out)],
        env={"COLUMNS": "400"},
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "| pipeline | attack | demo I2T clean |" in text and "| baseline | fgsm-8 |" in text and "95% bootstrap CI" in text
    assert "icons IT2T agent clean" in res.output
    assert write_report(two_runs["demo"], plots=False)["records"] == 24  # 3 samples x 2 x 2 x 2


def test_runs_that_cannot_be_merged_are_refused(two_runs, tmp_path):
    copy = tmp_path / "demo-again"
    shutil.copytree(two_runs["demo"], copy)
    res = CliRunner().invoke(app, ["eval", "report", str(two_runs["demo"]), str(copy), "--layout", "paper"])
    assert res.exit_code == 2
    assert "both hold dataset demo, setting i2t, pipeline agent" in " ".join(res.output.split())
    (copy / RESULTS).unlink()  # a run folder without its records
    res = CliRunner().invoke(app, ["eval", "report", str(two_runs["icons"]), str(copy), "--layout", "paper"])
    assert res.exit_code == 2 and "cannot be merged" in res.output
    res = CliRunner().invoke(app, ["eval", "report", str(two_runs["icons"]), "--layout", "paper", "--enhanced", "nosuch"])
    assert res.exit_code == 2 and "no such pipeline" in res.output


@pytest.mark.parametrize("dataset", ["wikimel", "richpediamel", "wikidiverse", "wikiperson", "m3el"])
def test_paper_configs_dry_run_on_the_fixtures(dataset, tmp_path, monkeypatch):
    from retlink.eval.config import load_eval_config
    from retlink.eval.pipelines import agent_config

    monkeypatch.setenv("RETLINK_DATA", str(FIXTURES))
    cfg = load_eval_config(PAPER / f"{dataset}.yaml")
    assert cfg.dataset.root == FIXTURES / dataset and cfg.reference_pipeline() == "baseline"
    served = agent_config(next(p for p in cfg.pipelines if p.name == "retlink"))
    assert served.captioner.backend == "openai_vlm" and served.reasoner.llm.backend == "openai"
    assert served.reasoner.max_reasoning_tokens > 0 and [b.kind for b in served.search.backends] == ["wikipedia"]
    res = CliRunner().invoke(
        app, ["eval", "run", str(PAPER / f"{dataset}.yaml"), "--dry-run", "--out", str(tmp_path / "run")],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "links planned" in res.output and not (tmp_path / "run").exists()


def test_an_unset_data_folder_is_a_load_error_that_says_what_to_set(monkeypatch):
    monkeypatch.delenv("RETLINK_DATA", raising=False)
    res = CliRunner().invoke(app, ["eval", "run", str(PAPER / "wikimel.yaml"), "--dry-run"])
    assert res.exit_code == 2
    assert "RETLINK_DATA, which is not set" in " ".join(res.output.split())
