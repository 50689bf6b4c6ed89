"""`retlink eval ...`: run a YAML-scripted robustness evaluation, report, export, compare.

    retlink eval run CONFIG.yaml [--limit N] [--dry-run] [--out DIR] [--ray] [--ray-address ADDRESS]
    retlink eval report RUN_DIR... [--layout paper] [--enhanced PIPE] [--out FILE.md]
    retlink eval export RUN_DIR [--out DIR]
    retlink eval compare RUN_A RUN_B [--out FILE.md]
    retlink eval defences [CONFIG] [--limit N]   # `eval run` of the bundled defences config

Heavy imports (torch, the models) happen inside the commands, so `retlink eval --help` is fast.
Errors are `RetlinkError`s, printed as one line with exit code 2 by `retlink.core.errors.friendly_errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from retlink.core.errors import friendly_errors

eval_app = typer.Typer(help="Scripted robustness evaluations (attacks, reports, export).", no_args_is_help=True)

out = Console()
#: the bundled defence evaluation that `retlink eval defences` runs
DEFENCES_CONFIG = Path(__file__).resolve().parent / "configs" / "defences" / "defences.yaml"


@eval_app.command("run")
@friendly_errors
def run(
    config: Annotated[Path, typer.Argument(help="eval config YAML (see eval/configs/)")],
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="first N samples only")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and exit")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="run folder (default: output_dir/name)")] = None,
    report: Annotated[bool, typer.Option(help="write the report when the run ends")] = True,
    ray: Annotated[bool, typer.Option("--ray", help="run on a Ray cluster (executor kind: ray)")] = False,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", metavar="ADDRESS", help="the Ray cluster to join (implies --ray)"),
    ] = None,
) -> None:
    """Run (or resume) the evaluation CONFIG: records in RUN_DIR/results.jsonl, then the report."""
    from retlink.eval.report import write_report
    from retlink.eval.runner import run_config
    from retlink.eval.runs import REPORT

    on_ray = ray_address if ray_address is not None else ("" if ray else None)
    runner, _ = run_config(config, out=out_dir, limit=limit, dry_run=dry_run, ray=on_ray)
    if dry_run or not report:
        return
    summary = write_report(runner.dir)
    _print_tables(summary)
    out.print(f"report: [bold]{runner.dir / REPORT}[/]")


@eval_app.command("report")
@friendly_errors
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="run folder(s); several for --layout paper")],
    layout: Annotated[
        str, typer.Option("--layout", help="standard, or paper: LLM-RetLink's datasets x {I2T, IT2T} table across runs")
    ] = "standard",
    enhanced: Annotated[
        str | None,
        typer.Option(
            "--enhanced", metavar="PIPE",
            help="paper: the retrieval-enhanced pipeline (default: each run's last agent that is not its reference)",
        ),
    ] = None,
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="paper: also write the table as Markdown")] = None,
) -> None:
    """Rebuild summary.json, report.md and the plots of each RUN_DIR from its JSONL records; with
    --layout paper, also merge the runs (one per dataset) into LLM-RetLink's table."""
    from retlink.core.errors import ConfigError
    from retlink.eval.paper import paper_table
    from retlink.eval.report import write_report
    from retlink.eval.runs import REPORT

    if layout not in ("standard", "paper"):
        raise ConfigError(f"--layout {layout!r}: choose standard or paper")
    if layout != "paper" and (enhanced is not None or out_file is not None):
        raise ConfigError("--enhanced and --out are options of --layout paper")
    # the merged table is checked first: a run that cannot be merged fails before any file is written
    table = paper_table(list(run_dirs), enhanced) if layout == "paper" else None
    for run_dir in run_dirs:
        summary = write_report(run_dir)
        if table is None:
            _print_tables(summary)
        out.print(f"report: [bold]{run_dir / REPORT}[/]")
    if table is not None:
        shown = Table(*table.header, caption=table.caption)
        for row in table.rows:
            shown.add_row(*row)
        out.print(shown)
        if out_file:
            out_file.write_text(table.markdown())
            out.print(f"paper table: [bold]{out_file}[/]")


@eval_app.command("export")
@friendly_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="run folder")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="export folder (default: RUN_DIR/export)")] = None,
) -> None:
    """Write the attacked dataset of RUN_DIR (PNG + tensors + annotations + manifest per attack)."""
    from retlink.eval.dataset_export import export_run

    for attack, folder in export_run(run_dir, out_dir).items():
        out.print(f"{attack}: [bold]{folder}[/]")


@eval_app.command("compare")
@friendly_errors
def compare(
    run_a: Annotated[Path, typer.Argument(help="first run folder")],
    run_b: Annotated[Path, typer.Argument(help="second run folder")],
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="also write the table as Markdown")] = None,
) -> None:
    """Hits@1 of two runs side by side, cell by cell, with the difference."""
    from retlink.eval.report import compare_markdown, compare_runs

    rows = compare_runs(run_a, run_b)
    table = Table("setting", "pipeline", "condition", "H@1 a", "H@1 b", "b − a", "CIs overlap", title=f"a = {run_a}, b = {run_b}")
    for r in rows:
        table.add_row(
            r["setting"], r["pipeline"], r["condition"], f"{100 * r['a']:.1f}", f"{100 * r['b']:.1f}",
            f"{100 * r['delta']:+.1f}", "yes" if r["ci_overlap"] else "[bold]no[/]",
        )
    out.print(table)
    if out_file:
        out_file.write_text(compare_markdown(rows, str(run_a), str(run_b)))


def _print_tables(summary: dict) -> None:
    """The main table of each setting on the terminal."""
    for name, st in summary["settings"].items():
        columns = st["conditions"] + list(st.get("worst_case", {}))  # the report's worst-case columns last
        table = Table("pipeline", *columns, title=f"Hits@1 (%), setting {name}")
        for pipe, row in st["pipelines"].items():
            cells = []
            for a in columns:
                c = row.get(a)
                if c is None:
                    cells.append("–")
                    continue
                text = f"{100 * c['hits@1']:.1f}"
                if "drop" in c:
                    text += f" ({0.0 - 100 * c['drop']:+.1f})"
                if c.get("recovery") is not None and pipe != summary["reference"]:
                    text += f" [green]{100 * c['recovery']:+.1f}[/]"
                cells.append(text)
            table.add_row(pipe, *cells)
        out.print(table)


@eval_app.command("defences")
@friendly_errors
def defences(
    config: Annotated[
        Path, typer.Argument(help="eval config (default: the bundled src/retlink/eval/configs/defences/defences.yaml)")
    ] = DEFENCES_CONFIG,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="first N samples only")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="run folder (default: output_dir/name)")] = None,
) -> None:
    """The defence evaluation: `retlink eval run` of src/retlink/eval/configs/defences/defences.yaml (each level
    without and with the defences, clean, under PGD and under the adaptive attacks)."""
    run(config, limit=limit, dry_run=False, out_dir=out_dir, report=True, ray=False, ray_address=None)
