"""LLM-RetLink's results table (Wang et al., 2025) merged from several run folders.

The paper reports one table over its datasets: a row per model, and per dataset and setting
(I2T, IT2T) the model's Hits@1 clean, under attack, and under attack with retrieval enhancement.
An eval run covers one dataset, so the table is built from several runs (`retlink eval report
RUN... --layout paper`), each summarised by the report's own `build_summary` (the same cells,
the same seeded bootstrap intervals as its report.md):

- rows: (pipeline, attack) for every pipeline of the runs but the enhanced one, every attack;
- columns, per (dataset, setting kind): the row pipeline clean, attacked, the enhanced pipeline
  attacked with its recovery over the row pipeline (paired over samples, with its interval), and
  the enhanced pipeline clean (the agent-clean column).

The enhanced pipeline ("+ retrieval enhancement") is `enhanced` when given, else each run's last
`agent` pipeline that is not its reference (configs list the full system last). A run's I2T and
IT2T are its first settings of those kinds without a text perturbation. Runs merge only when no
(dataset, setting kind, pipeline) is recorded by two of them: two answers for one cell would be
a silent choice, so that is a ConfigError naming both folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retlink.core.errors import ConfigError
from retlink.eval.config import EvalConfig
from retlink.eval.report import build_summary
from retlink.eval.runs import CLEAN, RESULTS, interval, mean, pct_ci, read_meta, read_records, rounded

#: the settings the paper reports, in its column order
PAPER_KINDS = ("i2t", "it2t")
#: the parts of one (dataset, setting) column group
PARTS = ("clean", "attacked", "+RE (rec)", "agent clean")


@dataclass
class PaperRun:
    """One run folder as the table reads it."""

    path: Path
    config: EvalConfig
    summary: dict[str, Any]
    #: per setting kind, the run's setting name of that kind (first without text perturbation)
    settings: dict[str, str]
    enhanced: str | None
    #: (pipeline, setting name, condition) -> {sample id: correct}
    correct: dict[tuple[str, str, str], dict[str, bool]] = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return self.config.dataset.key


@dataclass
class PaperTable:
    caption: str
    header: list[str]
    rows: list[list[str]]
    #: the numbers behind the cells: one dict per non-empty cell
    cells: list[dict[str, Any]]

    def markdown(self) -> str:
        lines = [self.caption, "", "| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"


def load_paper_run(path: str | Path, enhanced: str | None = None) -> PaperRun:
    """A run folder with its summary; a ConfigError when it has no records (it cannot be merged)."""
    path = Path(path)
    meta = read_meta(path)
    records = read_records(path / RESULTS)
    if not records:
        raise ConfigError(f"{path}: no records ({RESULTS} is empty or missing), so it cannot be merged into the table")
    cfg = EvalConfig.model_validate(meta["config"])
    names = [p.name for p in cfg.pipelines]
    if enhanced is not None and enhanced not in names:
        raise ConfigError(f"--enhanced {enhanced!r}: run {path} has no such pipeline (it has {', '.join(names)})")
    ref = cfg.reference_pipeline()
    agents = [p.name for p in cfg.pipelines if p.kind == "agent" and p.name != ref]
    settings: dict[str, str] = {}
    for s in cfg.settings:
        if s.setting in PAPER_KINDS and s.text is None:
            settings.setdefault(s.setting, s.name)
    run = PaperRun(path, cfg, build_summary(cfg, meta, records), settings, enhanced or (agents[-1] if agents else None))
    for r in records.values():
        run.correct.setdefault((r["pipeline"], r["setting"], r["attack"]), {})[r["sample_id"]] = bool(r["correct"])
    return run


def _check_mergeable(runs: list[PaperRun]) -> None:
    """No (dataset, setting kind, pipeline) recorded by two runs."""
    owner: dict[tuple[str, str, str], Path] = {}
    for run in runs:
        for kind, sname in run.settings.items():
            recorded = {p for (p, s, _) in run.correct if s == sname}
            for pipe in sorted(recorded):
                key = (run.dataset, kind, pipe)
                if key in owner:
                    raise ConfigError(
                        f"runs {owner[key]} and {run.path} both hold dataset {run.dataset}, setting {kind}, "
                        f"pipeline {pipe}: a paper table takes one run per dataset, setting and pipeline "
                        "(report them separately, or rename the pipeline in one of them)"
                    )
                owner[key] = run.path


def _cell(run: PaperRun, kind: str, pipe: str | None, cond: str) -> dict[str, Any] | None:
    sname = run.settings.get(kind)
    if sname is None or pipe is None:
        return None
    return run.summary["settings"][sname]["pipelines"].get(pipe, {}).get(cond)


def _recovery(run: PaperRun, kind: str, pipe: str, attack: str) -> tuple[float | None, list[float]]:
    """Enhanced minus `pipe` under `attack`, paired over the samples both answered, with the
    report's own bootstrap interval (seed 2, as the report's recovery)."""
    sname = run.settings[kind]
    a = run.correct.get((run.enhanced or "", sname, attack), {})
    b = run.correct.get((pipe, sname, attack), {})
    ids = sorted(set(a) & set(b))
    diff = [float(a[i]) - float(b[i]) for i in ids]
    m = run.config.metrics
    return rounded(mean(diff)), interval(diff, m.bootstrap_resamples, m.confidence, seed=2)


def paper_table(run_dirs: list[str | Path], enhanced: str | None = None) -> PaperTable:
    """The merged table of `run_dirs` (see the module docstring)."""
    if not run_dirs:
        raise ConfigError("give at least one run folder")
    runs = [load_paper_run(d, enhanced) for d in run_dirs]
    _check_mergeable(runs)
    groups: dict[tuple[str, str], list[PaperRun]] = {}
    for run in runs:
        for kind in PAPER_KINDS:
            if kind in run.settings:
                groups.setdefault((run.dataset, kind), []).append(run)
    if not groups:
        raise ConfigError(
            "none of the runs has an i2t or it2t setting without a text perturbation: nothing for the paper layout"
        )
    pipes = list(dict.fromkeys(p.name for run in runs for p in run.config.pipelines if p.name != run.enhanced))
    attacks = list(dict.fromkeys(a.name for run in runs for a in run.config.attacks))
    header = ["pipeline", "attack"] + [f"{ds} {kind.upper()} {part}" for ds, kind in groups for part in PARTS]
    rows: list[list[str]] = []
    cells: list[dict[str, Any]] = []
    for pipe in pipes:
        for attack in attacks or [CLEAN]:
            row = [pipe, attack]
            for (ds, kind), members in groups.items():
                # the run that recorded this pipeline here (one at most: _check_mergeable), else the
                # first: the enhanced pipeline's own columns come from the same run as the row's
                run = next((r for r in members if _cell(r, kind, pipe, CLEAN) or _cell(r, kind, pipe, attack)), members[0])
                parts = {
                    "clean": _cell(run, kind, pipe, CLEAN),
                    "attacked": _cell(run, kind, pipe, attack) if attack != CLEAN else None,
                    "+RE (rec)": _cell(run, kind, run.enhanced, attack) if attack != CLEAN else None,
                    "agent clean": _cell(run, kind, run.enhanced, CLEAN),
                }
                for part in PARTS:
                    c = parts[part]
                    if c is None:
                        row.append("–")
                        continue
                    text = pct_ci(c["hits@1"], c["hits@1_ci"])
                    entry = {"pipeline": pipe, "attack": attack, "dataset": ds, "setting": kind, "part": part,
                             "n": c["n"], "hits@1": c["hits@1"], "hits@1_ci": c["hits@1_ci"]}
                    if part == "+RE (rec)" and parts["attacked"] is not None:
                        rec, ci = _recovery(run, kind, pipe, attack)
                        text += f" ({'–' if rec is None else f'{100 * rec:+.1f}'} [{100 * ci[0]:+.0f}, {100 * ci[1]:+.0f}])"
                        entry |= {"recovery": rec, "recovery_ci": ci}
                    row.append(text)
                    cells.append(entry)
            rows.append(row)
    levels = sorted({round(100 * run.config.metrics.confidence) for run in runs})
    enhanced_names = sorted({run.enhanced or "–" for run in runs})
    caption = (
        f"Hits@1 in % with its {'/'.join(map(str, levels))}% bootstrap CI. Per dataset and setting: the row's "
        f"pipeline clean and attacked; +RE: the retrieval-enhanced pipeline ({', '.join(enhanced_names)}) under the "
        "same attack, with its recovery over the row's pipeline (paired, percentage points); agent clean: the "
        "enhanced pipeline without attack. Runs: " + ", ".join(f"{run.dataset}={run.path}" for run in runs) + "."
    )
    return PaperTable(caption, header, rows, cells)
