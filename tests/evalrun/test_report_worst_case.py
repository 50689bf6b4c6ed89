"""The report's worst-case columns (issue 29): per sample a hit only under every adversarial attack,
checked against the per-sample AND worked out here from the run's own results.jsonl."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from typer.testing import CliRunner

from retlink.attacks.spec import AttackSpec
from retlink.cli import app
from retlink.eval.config import load_eval_config
from retlink.eval.paper import paper_table
from retlink.eval.report import compare_runs, write_report
from retlink.eval.runs import RESULTS, bootstrap_ci
from tests.evalruns import hand_record, write_hand_run

ATTACKS = [
    {"name": "pgd-8", "attack": "pgd", "params": {"eps": "8/255"}},
    {"name": "apgd-8", "attack": "apgd", "params": {"eps": "8/255", "loss": None}},
    {"name": "pgd-4", "attack": "pgd", "params": {"eps": "4/255"}},
    {"name": "fgsm-4", "attack": "fgsm", "params": {"eps": "4/255"}},
    {"name": "view", "attack": "augment"},  # not adversarial: never in a worst case
    {"name": "noise", "attack": "gaussian_noise"},  # likewise
]
ADVERSARIAL = ["pgd-8", "apgd-8", "pgd-4", "fgsm-4"]
IDS = [f"s{i}" for i in range(8)]
#: per (pipeline, setting, condition): samples s0..s7; 1 hit, 0 miss, "E" a failed link, None no record
MARKS: dict[tuple[str, str, str], list] = {
    ("baseline", "it2t", "clean"): [1, 1, 1, 1, 1, 1, 1, 0],
    ("baseline", "it2t", "pgd-8"): [1, 1, 0, 1, 0, 1, 1, 0],
    ("baseline", "it2t", "apgd-8"): [1, 0, 1, 1, 0, 1, 1, 0],
    ("baseline", "it2t", "pgd-4"): [1, 1, 1, 1, 0, 1, 1, 0],
    ("baseline", "it2t", "fgsm-4"): [1, 1, 1, 0, 1, 1, 1, 0],
    # misses the adversarial attacks all leave right (s0, s5): counting them would change the column
    ("baseline", "it2t", "view"): [0, 1, 1, 1, 1, 1, 1, 1],
    ("baseline", "it2t", "noise"): [1, 1, 1, 1, 1, 0, 1, 0],
    ("agent", "it2t", "clean"): [1, 1, 1, 1, 1, 1, 1, 1],
    ("agent", "it2t", "pgd-8"): [1, 1, 1, 1, 1, 1, 0, 1],
    ("agent", "it2t", "apgd-8"): [1, 1, 1, 1, "E", 1, 1, None],  # s4 failed, s7 not recorded
    ("agent", "it2t", "pgd-4"): [1, 1, 1, 1, 1, 1, 1, 1],
    ("agent", "it2t", "fgsm-4"): [1, 1, 1, 0, 1, 1, 1, 1],
    ("agent", "it2t", "view"): [1] * 8,
    ("agent", "it2t", "noise"): [1] * 8,
    # i2t runs one adversarial attack: no worst-case column there
    ("baseline", "i2t", "clean"): [1, 1, 0, 0, 1, 1, 0, 0],
    ("baseline", "i2t", "pgd-8"): [0, 1, 0, 0, 1, 0, 0, 0],
    ("baseline", "i2t", "view"): [1, 0, 0, 0, 1, 1, 0, 0],
}


def write_run(folder, attacks, settings, marks):
    """A run folder (run.json + results.jsonl) holding exactly the records `marks` describes."""
    cfg = load_eval_config(
        {
            "name": "worst",
            "dataset": {"key": "demo"},
            "kb": {"path": str(folder / "kb")},
            "pipelines": [{"name": "baseline", "kind": "baseline"}, {"name": "agent", "kind": "agent"}],
            "attacks": attacks,
            "settings": settings,
            "metrics": {"bootstrap_resamples": 50},
        }
    )
    records = [
        hand_record(sid, pipe, setting, attack, mark == 1, error=mark == "E", wrong_rank=4)
        for (pipe, setting, attack), row in marks.items()
        for sid, mark in zip(IDS, row, strict=True)
        if mark is not None
    ]
    return write_hand_run(folder, cfg, IDS, records)


@pytest.fixture
def run_dir(tmp_path):
    settings = ["it2t", {"name": "i2t", "setting": "i2t", "attacks": ["pgd-8", "view"], "pipelines": ["baseline"]}]
    return write_run(tmp_path, ATTACKS, settings, MARKS)


def worst_from_records(run_dir, pipe, setting, attacks):
    """{sample: hit under every attack} read straight from results.jsonl, for the samples that
    have a record under each of `attacks` (the report's rule for an unfinished run)."""
    by_attack: dict[str, dict[str, bool]] = defaultdict(dict)
    for line in (run_dir / RESULTS).read_text().splitlines():
        r = json.loads(line)
        if r["pipeline"] == pipe and r["setting"] == setting:
            by_attack[r["attack"]][r["sample_id"]] = r["correct"]
    ids = set.intersection(*(set(by_attack[a]) for a in attacks))
    return {i: all(by_attack[a][i] for a in attacks) for i in sorted(ids)}


def ci(values, seed):
    return [round(x, 4) for x in bootstrap_ci(values, n_resamples=50, seed=seed)]


def test_worst_case_is_the_per_sample_and_of_the_adversarial_attacks(run_dir):
    summary = write_report(run_dir, plots=False)
    st = summary["settings"]["it2t"]
    assert st["worst_case"] == {
        "worst case": ADVERSARIAL,
        "worst case 4/255": ["pgd-4", "fgsm-4"],
        "worst case 8/255": ["pgd-8", "apgd-8"],
    }
    for col, attacks in st["worst_case"].items():
        base = worst_from_records(run_dir, "baseline", "it2t", attacks)
        agent = worst_from_records(run_dir, "agent", "it2t", attacks)
        for pipe, marks in (("baseline", base), ("agent", agent)):
            cell = st["pipelines"][pipe][col]
            values = [float(marks[i]) for i in sorted(marks)]
            assert cell["n"] == len(marks) and cell["attacks"] == attacks
            assert cell["hits@1"] == round(sum(values) / len(values), 4)
            assert cell["hits@1_ci"] == ci(values, seed=0)  # the other cells' helper and seed
        paired = sorted(set(base) & set(agent))
        diff = [float(agent[i]) - float(base[i]) for i in paired]
        agent_cell = st["pipelines"]["agent"][col]
        assert agent_cell["recovery"] == round(sum(diff) / len(diff), 4)
        assert agent_cell["recovery_ci"] == ci(diff, seed=2)
        assert "recovery" not in st["pipelines"]["baseline"][col]  # the reference itself
    # the same numbers worked by hand from MARKS: clean and the non-adversarial views left out
    # (with them the baseline would keep 1/8), the agent's s7 (no apgd-8 record) left out, its
    # failed s4 a miss
    base_cell, agent_cell = st["pipelines"]["baseline"]["worst case"], st["pipelines"]["agent"]["worst case"]
    assert (base_cell["hits@1"], base_cell["n"], base_cell["left_out"]) == (0.375, 8, 0)
    assert (agent_cell["hits@1"], agent_cell["n"], agent_cell["left_out"], agent_cell["failed"]) == (0.5714, 7, 1, 1)
    assert agent_cell["recovery"] == 0.1429  # [1,1,1,0,0,1,0] - [1,0,0,0,0,1,1] over s0..s6
    assert st["pipelines"]["agent"]["worst case 4/255"]["left_out"] == 0  # apgd-8 is not in it
    assert st["pipelines"]["agent"]["worst case 4/255"]["hits@1"] == 0.875
    # drop against the same pipeline's clean, paired: baseline clean 7/8, worst 3/8
    assert base_cell["drop"] == 0.5 and base_cell["attack_success_rate"] == round(4 / 7, 4)
    report = (run_dir / "report.md").read_text()
    assert "| pipeline | clean | pgd-8 | apgd-8 | pgd-4 | fgsm-4 | view | noise | worst case | worst case 4/255 | worst case 8/255 |" in report
    assert "1 not recorded under every attack, left out" in report and "Croce & Hein 2020" in report
    assert "Worst-case columns: *worst case* = pgd-8, apgd-8, pgd-4, fgsm-4; *worst case 4/255* = pgd-4, fgsm-4;" in report


def test_one_adversarial_attack_has_no_worst_case_column(run_dir, tmp_path_factory):
    summary = write_report(run_dir, plots=False)
    i2t = summary["settings"]["i2t"]  # pgd-8 and an augment view: one adversarial attack
    assert "worst_case" not in i2t and not any(k.startswith("worst case") for k in i2t["pipelines"]["baseline"])
    # a run whose only adversarial attack is pgd-8: no column anywhere, nor in the report
    one = write_run(
        tmp_path_factory.mktemp("one"),
        [ATTACKS[0], ATTACKS[4], ATTACKS[5]],
        ["it2t"],
        {k: v for k, v in MARKS.items() if k[1] == "it2t" and k[2] in ("clean", "pgd-8", "view", "noise")},
    )
    single = write_run(tmp_path_factory.mktemp("single"), [ATTACKS[0]], ["it2t"], {k: v for k, v in MARKS.items() if k[1] == "it2t" and k[2] in ("clean", "pgd-8")})
    for folder in (one, single):
        summary = write_report(folder, plots=False)
        assert "worst_case" not in summary["settings"]["it2t"]
        assert "worst case" not in (folder / "report.md").read_text()


def test_attack_kinds_and_budgets_come_from_the_registry():
    spec = {a["name"]: AttackSpec.model_validate(a) for a in ATTACKS}
    assert [n for n, s in spec.items() if s.adversarial] == ADVERSARIAL
    assert spec["pgd-8"].budget == ("Linf", 8 / 255) and spec["fgsm-4"].budget == ("Linf", 4 / 255)
    assert AttackSpec(name="cw", attack="cw").budget == ("L2", 1.0)
    assert AttackSpec(name="l2", attack="pgd", params={"norm": "L2", "eps": 0.5}).budget == ("L2", 0.5)
    assert AttackSpec(name="words", attack="text").budget is None
    joint = AttackSpec(name="joint", attack="multimodal", params={"eps": "2/255"})
    assert joint.adversarial and joint.eps == 2 / 255 and joint.budget is None  # it edits the text too
    assert AttackSpec(name="adaptive", attack="adaptive").adversarial


def test_paper_layout_compare_and_the_terminal_table(run_dir):
    res = CliRunner().invoke(app, ["eval", "report", str(run_dir)], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    assert "worst case 8/255" in res.output and "57.1" in res.output  # the agent's worst case, 4/7
    table = paper_table([run_dir])  # rows are the config's attacks; no worst-case row
    assert [r[1] for r in table.rows] == [a["name"] for a in ATTACKS]
    rows = compare_runs(run_dir, run_dir)
    worst = [r for r in rows if r["condition"] == "worst case"]
    assert len(worst) == 2 and all(r["delta"] == 0 and r["ci_overlap"] for r in worst)
