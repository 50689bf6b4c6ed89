"""`retlink mate ...`: build the MATE set, run a model on it, rebuild a run's report.

    retlink mate build --out DIR [--n 5500] [--controls N] [--seed S] [--first K] [--workers W]
    retlink mate run CONFIG.yaml [--limit N] [--out RUN_DIR] [--dry-run]
    retlink mate report RUN_DIR

Heavy imports happen inside the commands; errors are `RetlinkError`s, printed as one line with
exit code 2 by `retlink.core.errors.friendly_errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from retlink.core.errors import friendly_errors
from retlink.eval.runs import pct

if TYPE_CHECKING:
    from retlink.mate.harness import MateRunner

mate_app = typer.Typer(help="MATE: cross-modal entity linking on synthetic 3D scenes.", no_args_is_help=True)
out = Console()


@mate_app.command("build")
@friendly_errors
def build_cmd(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder to write (replaced when complete)")],
    n: Annotated[int, typer.Option("--n", min=1, help="cross-modal questions (the paper: 5500)")] = 5500,
    controls: Annotated[int | None, typer.Option("--controls", min=0, help="unimodal control questions (default n/5)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="everything derives from it")] = 0,
    first: Annotated[int | None, typer.Option("--first", min=1, help="only the first K questions of that set (a seeded random sample)")] = None,
    workers: Annotated[int, typer.Option("--workers", help="processes, 1 to this machine's cores (the scenes are independent)")] = 1,
) -> None:
    """Render the balanced MATE set: PNG + JSON per scene, questions.jsonl, manifest.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from retlink.core.outdirs import check_out_dir
    from retlink.mate.build import build, check_workers

    check_workers(workers)  # before the progress bar and any process
    check_out_dir(out_dir)
    with Progress(TextColumn("[bold]scenes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task("scenes", total=None)
        manifest = build(out_dir, n, n_controls=controls, seed=seed, first=first, workers=workers,
                         progress=lambda done, total: bar.update(task, completed=done, total=total))
    table = Table("task", "questions", title=f"MATE set {out_dir} (seed {seed})")
    for task_name, counts in manifest["counts"].items():
        table.add_row(task_name, str(sum(counts.values())))
    out.print(table)


@mate_app.command("run")
@friendly_errors
def run_cmd(
    config: Annotated[Path, typer.Argument(help="MATE run config YAML (see eval/configs/mate-*.yaml)")],
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="first N questions only")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="run folder (default: output_dir/name)")] = None,
    report: Annotated[bool, typer.Option(help="write the report when the run ends")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate CONFIG, print the plan and exit (no server, no build)")] = False,
) -> None:
    """Run (or resume) CONFIG: answers in RUN_DIR/results.jsonl, then the report."""
    from retlink.eval.runs import REPORT
    from retlink.mate.harness import MateRunner, load_mate_config
    from retlink.mate.report import write_report

    runner = MateRunner(load_mate_config(config), out_dir)
    if dry_run:
        _print_plan(runner, limit)
        return
    runner.run(limit)
    if report:
        _print(write_report(runner.dir))
        out.print(f"report: [bold]{runner.dir / REPORT}[/]")


@mate_app.command("report")
@friendly_errors
def report_cmd(run_dir: Annotated[Path, typer.Argument(help="MATE run folder")]) -> None:
    """Rebuild summary.json, report.md and the plot of RUN_DIR from its records."""
    from retlink.eval.runs import REPORT
    from retlink.mate.report import write_report

    _print(write_report(run_dir))
    out.print(f"report: [bold]{run_dir / REPORT}[/]")


def _print_plan(runner: MateRunner, limit: int | None) -> None:
    """What `mate run` would do: answers per model, prompt (with its text format) and attack, over
    the set's questions when it exists, else the size `build:` would make. Contacts no server."""
    from retlink.mate.build import MateSet

    cfg = runner.config
    root = cfg.data.path
    if (root / "manifest.json").exists():
        n = len(runner.questions(MateSet(root)))
        where = f"{n} questions of {root}"
    elif cfg.build is not None:
        b = cfg.build
        controls = b.n_controls if b.n_controls is not None else b.n // 5
        chosen = b.n * ("cross" in cfg.splits) + controls * ("control" in cfg.splits)
        n = round(chosen * b.first / (b.n + controls)) if b.first else chosen  # `first` samples both splits
        where = f"about {n} questions of a set built in {root} (n={b.n}, seed={b.seed})"
    else:
        n, where = 0, f"no set at {root} and no build: section (the run would fail)"
    n = min(x for x in (n, cfg.limit, limit) if x is not None)
    table = Table("model", "kind", "prompt", "text format", "shots", "cot", "reflect", "answers",
                  title=f"MATE {cfg.name}: plan over {where}; run folder {runner.dir}")
    for m in cfg.models:
        for p in cfg.prompts if m.kind == "openai" else cfg.agent_prompts():
            table.add_row(m.name, m.kind, p.name, p.text_format, str(p.shots), str(p.cot), str(p.reflect),
                          str(n * (1 + len(cfg.attacks))))
    out.print(table)
    if cfg.attacks:
        out.print("attacks: " + ", ".join(a.name for a in cfg.attacks))


def _print(summary: dict) -> None:
    table = Table("model · prompt", "img2data", "data2img", "img2img", "data2data", "OSE", "random (cross)",
                  title=f"MATE {summary['name']}: exact match (%)")
    for name, r in summary["rows"].items():
        cells = []
        for t in ("img2data", "data2img", "img2img", "data2data"):
            c = r["tasks"].get(t)
            cells.append(pct(c["accuracy"]) if c else "–")
        table.add_row(name, *cells, pct(r.get("out_of_scene")), pct(r.get("chance", {}).get("cross_modal")))
    out.print(table)
    if summary.get("robustness"):
        rob = Table("model · prompt", "attack", "clean", "attacked", "drop", "DR", title="MATE robustness: cross-modal exact match (%)")
        for name, by_attack in summary["robustness"].items():
            for attack, c in by_attack.items():
                dr = "–" if c["drop_ratio"] is None else f"{c['drop_ratio']:.2f}"
                rob.add_row(name, attack, pct(c["clean"]["accuracy"]), pct(c["attacked"]["accuracy"]), pct(c["drop"]), dr)
        out.print(rob)


