"""The report's numbers from hand-written records: drop ratio and attack success rate as the
papers define them, the paper layout, and the detector table."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from retlink.cli import app
from retlink.eval.config import load_eval_config
from retlink.eval.paper import paper_table
from retlink.eval.report import write_report
from retlink.eval.runs import bootstrap_ci
from tests.evalruns import hand_record, write_hand_run

#: per (pipeline, setting, attack): correctness of samples s0..s3
CORRECT = {
    ("baseline", "it2t", "clean"): [1, 1, 1, 1],
    ("baseline", "it2t", "pgd-8"): [1, 0, 0, 0],
    ("agent", "it2t", "clean"): [1, 1, 1, 0],
    ("agent", "it2t", "pgd-8"): [1, 1, 1, 0],
    ("baseline", "i2t", "clean"): [1, 1, 0, 0],
    ("baseline", "i2t", "pgd-8"): [0, 0, 0, 0],
    ("agent", "i2t", "clean"): [1, 1, 0, 0],
    ("agent", "i2t", "pgd-8"): [1, 0, 0, 0],
}


@pytest.fixture
def run_dir(tmp_path):
    cfg = load_eval_config(
        {
            "name": "hand",
            "dataset": {"key": "demo"},
            "kb": {"path": str(tmp_path / "kb")},
            "pipelines": [{"name": "baseline", "kind": "baseline"}, {"name": "agent", "kind": "agent"}],
            "attacks": [{"name": "pgd-8", "attack": "pgd"}],
            "settings": ["it2t", "i2t"],
            "metrics": {"bootstrap_resamples": 50},
        }
    )
    ids = [f"s{i}" for i in range(4)]
    records = []
    for (pipe, setting, attack), marks in CORRECT.items():
        for sid, ok in zip(ids, marks, strict=True):
            rec = hand_record(sid, pipe, setting, attack, bool(ok))
            if pipe == "agent" and setting == "it2t":  # a detector: scores and flags
                rec["detector_score"] = 1.5 if attack != "clean" else 0.1 * (int(sid[1]) + 1)
                rec["flagged"] = attack != "clean" and sid != "s3"
            records.append(rec)
    return write_hand_run(tmp_path, cfg, ids, records)


def test_drop_ratio_and_attack_success_rate_in_summary_and_report(run_dir):
    summary = write_report(run_dir, plots=False)
    cell = summary["settings"]["it2t"]["pipelines"]["baseline"]["pgd-8"]
    assert cell["drop"] == 0.75 and cell["drop_ratio"] == 0.75 and cell["attack_success_rate"] == 0.75
    agent = summary["settings"]["it2t"]["pipelines"]["agent"]["pgd-8"]
    assert agent["drop_ratio"] == 0 and agent["recovery"] == 0.5  # untouched; 3/4 vs the baseline's 1/4
    # intervals: the seeded bootstrap of the cell's own marks (50 resamples), paired for drop/recovery
    clean_cell = summary["settings"]["it2t"]["pipelines"]["baseline"]["clean"]
    assert clean_cell["hits@1_ci"] == [1.0, 1.0]  # every sample right: no spread to resample
    assert cell["hits@1_ci"] == [round(x, 4) for x in bootstrap_ci([1, 0, 0, 0], n_resamples=50, seed=0)]
    assert cell["drop_ci"] == [round(x, 4) for x in bootstrap_ci([0, 1, 1, 1], n_resamples=50, seed=1)]
    assert agent["recovery_ci"] == [round(x, 4) for x in bootstrap_ci([0, 1, 1, 0], n_resamples=50, seed=2)]
    assert cell["hits@1_ci"][0] < cell["hits@1_ci"][1] and cell["hits@1_ci"] != cell["drop_ci"]
    i2t = summary["settings"]["i2t"]["pipelines"]["baseline"]["pgd-8"]
    assert i2t["drop_ratio"] == 1.0 and i2t["attack_success_rate"] == 1.0
    report = (run_dir / "report.md").read_text()
    assert "drop 75.0 · DR 0.75 · ASR 75.0" in report and "lower is better" in report
    det = summary["detectors"]["it2t"]["agent"]["pgd-8"]
    assert det == {"n": 4, "roc_auc": 1.0, "fpr_clean": 0.0, "detection_rate": 0.75}
    assert "| it2t | agent | pgd-8 | 1.00 | 0.0 | 75.0 | 4 |" in report


def test_paper_layout(run_dir):
    table = paper_table([run_dir])
    assert table.header[2:6] == ["demo I2T clean", "demo I2T attacked", "demo I2T +RE (rec)", "demo I2T agent clean"]
    (row,) = table.rows  # the agent is the enhanced pipeline: one row, the baseline under PGD
    # I2T: baseline clean 50, attacked 0, agent attacked 25 (+25), agent clean 50; IT2T: 100, 25, 75 (+50), 75
    assert [cell.split(" [")[0] for cell in row] == ["baseline", "pgd-8", "50.0", "0.0", "25.0", "50.0", "100.0", "25.0", "75.0", "75.0"]
    assert row[8].endswith(" (+50.0 [+0, +100])")  # the paired recovery [0, 1, 1, 0] and its interval
    assert bootstrap_ci([0, 1, 1, 0], n_resamples=50, seed=2) == (0.0, 1.0)
    res = CliRunner().invoke(app, ["eval", "report", str(run_dir), "--layout", "paper"], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "(+50.0" in res.output and "IT2T agent" in res.output
    bad = CliRunner().invoke(app, ["eval", "report", str(run_dir), "--layout", "papers"])
    assert bad.exit_code == 2 and "--layout" in bad.output
