"""The report of a MATE run, rebuilt from its records alone (summary.json, report.md, plots/),
the same files and the same way as `retlink eval report`.

Per (model, prompt): exact-match accuracy with a bootstrap CI for each task (img2data,
data2img, their mean as "cross-modal", and the img2img / data2data controls), accuracy by object
count for each direction, by the number of linking attributes, and the out-of-scene error rate
(the share of cross-modal answers that name no value of any object in the scene); the random
baseline of the questions asked (mean of each record's `chance`) and the attribute-combination
table (`unique_by`, both from `retlink.mate.analysis`). The published numbers of the paper come
along as reference rows, marked as such.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from retlink.eval.runs import (
    CLEAN,
    absolute_drop,
    accuracy,
    attack_success_rate,
    drop_ratio,
    interval,
    pct,
    pct_ci,
    pyplot,
    read_meta,
    require_records,
    rounded,
    save_plot,
    write_report_files,
)
from retlink.mate.analysis import COMBINATIONS
from retlink.mate.harness import MateRunConfig
from retlink.mate.questions import CONTROL_TASKS, CROSS_TASKS, OBJECT_COUNTS

#: Exact-match accuracy (%) on MATE's cross-modal questions as published in arXiv 2503.03854
#: (the figures issue 17 quotes); not measured here.
PUBLISHED = {
    "Humans": 97.9,
    "Claude 3.5 Sonnet": 83.3,
    "Qwen2.5-VL-7B": 80.1,
    "GPT-4o": 77.8,
    "Random": 22.0,
}


def _cell(correct: list[float], cfg: MateRunConfig, seed: int) -> dict[str, Any]:
    """Exact-match accuracy of some answers with its bootstrap interval."""
    return {
        "n": len(correct),
        "accuracy": rounded(accuracy([bool(c) for c in correct])),
        "ci": interval(correct, cfg.bootstrap_resamples, cfg.confidence, seed),
    }


def build_summary(cfg: MateRunConfig, meta: dict[str, Any], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    attacked: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records.values():
        attack = r.get("attack", CLEAN)
        if attack == CLEAN:
            groups[(r["model"], r["prompt"])].append(r)
        else:
            attacked[(r["model"], r["prompt"])][attack].append(r)
    rows: dict[str, Any] = {}
    for (model, prompt), recs in sorted(groups.items()):
        recs.sort(key=lambda r: r["question_id"])
        by_task = {t: [float(r["correct"]) for r in recs if r["task"] == t] for t in (*CROSS_TASKS, *CONTROL_TASKS)}
        cross = [r for r in recs if r["task"] in CROSS_TASKS]
        row: dict[str, Any] = {"n": len(recs), "failed": sum(r["status"] != "ok" for r in recs)}
        row["tasks"] = {t: _cell(v, cfg, 0) for t, v in by_task.items() if v}
        if cross:
            row["cross_modal"] = _cell([float(r["correct"]) for r in cross], cfg, 1)
            row["out_of_scene"] = round(float(np.mean([bool(r["out_of_scene"]) for r in cross])), 4)
        row["chance"] = random_baseline(recs)
        row["by_objects"] = {
            t: {str(n): _cell([float(r["correct"]) for r in recs if r["task"] == t and r["n_objects"] == n], cfg, 2)
                for n in OBJECT_COUNTS if any(r["task"] == t and r["n_objects"] == n for r in recs)}
            for t in (*CROSS_TASKS, *CONTROL_TASKS) if by_task[t]
        }
        row["by_linking"] = {
            str(k): _cell([float(r["correct"]) for r in cross if r["linking"] == k], cfg, 3)
            for k in (0, 1, 2) if any(r["linking"] == k for r in cross)
        }
        row["seconds_per_answer"] = round(float(np.mean([r["seconds"] for r in recs])), 4)
        rows[f"{model} · {prompt}"] = {"model": model, "prompt": prompt, **row}
    robustness: dict[str, Any] = {}
    for (model, prompt), by_attack in sorted(attacked.items()):
        clean = {r["question_id"]: r for r in groups.get((model, prompt), [])}
        robustness[f"{model} · {prompt}"] = {a: robustness_cell(recs, clean, cfg) for a, recs in by_attack.items()}
    return {
        "name": cfg.name,
        "combinations": combination_table(groups, cfg),
        "fingerprint": meta.get("fingerprint"),
        "data": meta.get("data"),
        "questions_sha256": meta.get("questions_sha256"),
        "records": len(records),
        "rows": rows,
        "attacks": {a.name: describe_attack(a) for a in cfg.attacks},
        "robustness": robustness,
        "published": PUBLISHED,
    }


def random_baseline(recs: list[dict[str, Any]]) -> dict[str, float]:
    """The expected accuracy of uniform guessing on the questions these records asked (the mean of
    each question's `chance`, `retlink.mate.analysis`), cross-modal and per task; records made
    before questions carried a chance are left out (no key when none has one)."""
    out: dict[str, float] = {}
    for key, tasks in (("cross_modal", CROSS_TASKS), *((t, (t,)) for t in (*CROSS_TASKS, *CONTROL_TASKS))):
        values = [r["chance"] for r in recs if r["task"] in tasks and r.get("chance") is not None]
        if values:
            out[key] = round(float(np.mean(values)), 4)
    return out


def combination_table(groups: dict[tuple[str, str], list[dict[str, Any]]], cfg: MateRunConfig) -> dict[str, Any]:
    """The linking-attribute analysis over the clean cross-modal questions whose records know
    which attribute combinations single their object out (`unique_by`): per combination, the
    share of those questions it disambiguates and each model · prompt's accuracy on them."""
    unique: dict[str, list[str]] = {}
    for recs in groups.values():
        for r in recs:
            if r["task"] in CROSS_TASKS and r.get("unique_by") is not None:
                unique[r["question_id"]] = r["unique_by"]
    if not unique:
        return {}
    rows = {}
    for combo in COMBINATIONS:
        ids = {q for q, by in unique.items() if combo in by}
        rows[combo] = {
            "n": len(ids),
            "share": round(len(ids) / len(unique), 4),
            "accuracy": {
                f"{model} · {prompt}": _cell([float(r["correct"]) for r in recs if r["question_id"] in ids], cfg, 5)
                for (model, prompt), recs in sorted(groups.items())
                if ids and any(r["question_id"] in ids for r in recs)
            },
        }
    return {"questions": len(unique), "rows": rows}


def describe_attack(a: Any) -> str:
    """'square (normal, eps 8/255) on the agent's perception' and the like, for the table."""
    eps = a.eps
    budget = f", eps {eps * 255:.0f}/255" if eps is not None else ""
    if a.attack == "gaussian_noise":
        return f"Gaussian noise ({a.preset}, std {eps * 255:.0f}/255; random, no target)"
    on = "the binding agent's perception (score-based)" if a.target == "perception" else f"{a.surrogate} {a.target} (transfer)"
    return f"{a.attack} ({a.preset}{budget}) on {on}"


def robustness_cell(recs: list[dict[str, Any]], clean: dict[str, dict[str, Any]], cfg: MateRunConfig) -> dict[str, Any]:
    """One (model · prompt, attack) cell: cross-modal accuracy attacked and clean on the same
    questions, the drop (paired bootstrap CI), drop ratio, attack success rate, the measured
    perturbation (as the 8-bit PNG the model read) and the attack's seconds a scene."""
    recs = sorted((r for r in recs if r["task"] in CROSS_TASKS and r["question_id"] in clean), key=lambda r: r["question_id"])
    after = [float(r["correct"]) for r in recs]
    before = [float(clean[r["question_id"]]["correct"]) for r in recs]
    drop_ci = interval([b - a for b, a in zip(before, after, strict=True)], cfg.bootstrap_resamples, cfg.confidence, seed=4)
    acc_clean, acc_attacked = accuracy([bool(x) for x in before]), accuracy([bool(x) for x in after])
    norms = [r["norms_png"]["linf_255"] for r in recs if "norms_png" in r]
    return {
        "n": len(recs),
        "failed": sum(r["status"] != "ok" for r in recs),
        "clean": _cell(before, cfg, 1),
        "attacked": _cell(after, cfg, 1),
        "tasks": {t: _cell([float(r["correct"]) for r in recs if r["task"] == t], cfg, 0) for t in CROSS_TASKS if any(r["task"] == t for r in recs)},
        "drop": rounded(absolute_drop(acc_clean, acc_attacked)),
        "drop_ci": drop_ci,
        "drop_ratio": rounded(drop_ratio(acc_clean, acc_attacked)),
        "attack_success_rate": rounded(
            attack_success_rate([bool(x) for x in before], [bool(x) for x in after]) if recs else float("nan")
        ),
        "linf_255_png": {"mean": round(float(np.mean(norms)), 2), "max": round(float(np.max(norms)), 2)} if norms else None,
        "attack_seconds": round(float(np.mean([r["attack_seconds"] for r in recs if r.get("attack_seconds") is not None] or [np.nan])), 4)
        if recs else None,
    }


def cell_text(c: dict[str, Any] | None) -> str:
    """A `_cell` as table text: accuracy in % with its interval."""
    return pct_ci(c["accuracy"], c["ci"]) if c else "–"


def markdown(summary: dict[str, Any], cfg: MateRunConfig, plots: list[str]) -> str:
    level = round(100 * cfg.confidence)
    lines = [
        f"# MATE report: {summary['name']}",
        "",
        f"Set `{summary['data']}`; {summary['records']} answers recorded. Config fingerprint "
        f"`{summary['fingerprint']}`. Cells: exact-match accuracy in % with its {level}% bootstrap CI "
        "(failed answers count as wrong). OSE: out-of-scene errors, the share of cross-modal answers that are "
        "no object's value in the scene. Random: the expected cross-modal accuracy of guessing uniformly among each "
        "question's admissible answers (the listed colours or shapes, or the scene's values of a textual target), "
        "averaged over the questions asked.",
        "",
        "| model · prompt | img2data | data2img | cross-modal | random | img2img | data2data | OSE | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summary["rows"].items():
        t = r["tasks"]
        ose = pct(r.get("out_of_scene"))
        lines.append(
            f"| {name} | {cell_text(t.get('img2data'))} | {cell_text(t.get('data2img'))} | {cell_text(r.get('cross_modal'))} | "
            f"{pct(r.get('chance', {}).get('cross_modal'))} | {cell_text(t.get('img2img'))} | {cell_text(t.get('data2data'))} | {ose} | {r['n']} |"
        )
    for who, acc in summary["published"].items():
        lines.append(f"| {who} (published, arXiv 2503.03854) | | | {acc:.1f} | | | | | |")
    if summary.get("robustness"):
        lines += [
            "",
            "## Robustness (cross-modal)",
            "",
            "Each attack's scenes were answered by the same model and prompt as the clean ones; accuracy clean and "
            "attacked on the same questions, *drop* clean minus attacked (paired bootstrap CI), *DR* the drop ratio "
            "(clean - attacked) / clean, *ASR* the share of clean-correct answers the attack broke; L∞ is measured "
            "on the 8-bit PNG the model read, in 1/255.",
            "",
            "| model · prompt | attack | clean | attacked | drop | DR | ASR | img2data | data2img | L∞ mean / max | n |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, by_attack in summary["robustness"].items():
            for attack, c in by_attack.items():
                drop = pct_ci(c["drop"], c["drop_ci"])
                dr = "–" if c["drop_ratio"] is None else f"{c['drop_ratio']:.2f}"
                asr = pct(c["attack_success_rate"])
                norm = "–" if not c["linf_255_png"] else f"{c['linf_255_png']['mean']:.1f} / {c['linf_255_png']['max']:.1f}"
                lines.append(
                    f"| {name} | {attack} | {cell_text(c['clean'])} | {cell_text(c['attacked'])} | {drop} | {dr} | {asr} | "
                    f"{cell_text(c['tasks'].get('img2data'))} | {cell_text(c['tasks'].get('data2img'))} | {norm} | {c['n']} |"
                )
        lines += [""] + [f"- `{a}`: {d}" for a, d in summary["attacks"].items()]
    lines += ["", "## Accuracy by object count", ""]
    lines.append("| model · prompt | task | " + " | ".join(str(n) for n in OBJECT_COUNTS) + " |")
    lines.append("|---|---|" + "---|" * len(OBJECT_COUNTS))
    for name, r in summary["rows"].items():
        for task, cells in r["by_objects"].items():
            lines.append(f"| {name} | {task} | " + " | ".join(cell_text(cells.get(str(n))) for n in OBJECT_COUNTS) + " |")
    lines += [
        "",
        "## Accuracy by linking attributes (cross-modal)",
        "",
        "How many shared attributes (material, size class) it takes to single the object out; 0: only its "
        "position links the image and the JSON.",
        "",
        "| model · prompt | 0 | 1 | 2 |",
        "|---|---|---|---|",
    ]
    for name, r in summary["rows"].items():
        lines.append(f"| {name} | " + " | ".join(cell_text(r["by_linking"].get(str(k))) for k in (0, 1, 2)) + " |")
    lines += combination_markdown(summary)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def combination_markdown(summary: dict[str, Any]) -> list[str]:
    """The linking-attribute table: one row per attribute combination, one column per model · prompt."""
    table = summary.get("combinations") or {}
    if not table:
        return []
    names = list(summary["rows"])
    lines = [
        "",
        "## Linking attributes: combinations of up to three (cross-modal)",
        "",
        f"Over {table['questions']} cross-modal questions whose scene's ground truth the set keeps: how often a "
        "combination of attributes is unique to the question's object in its scene (*unique*), and the accuracy on "
        "those questions. Size is the small / large class; position is the ninth of the ground the object stands on "
        "(depth and side in thirds: exact coordinates and names are unique by construction).",
        "",
        "| attributes | unique | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for combo, c in table["rows"].items():
        cells = [cell_text(c["accuracy"].get(n)) for n in names]
        lines.append(f"| {combo.replace('+', ' + ')} | {pct(c['share'])} ({c['n']}) | " + " | ".join(cells) + " |")
    return lines


def plot(summary: dict[str, Any], out_dir: Path) -> list[str]:
    """accuracy_by_objects.png: cross-modal accuracy (both directions pooled per count) with CIs."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    for i, (name, r) in enumerate(summary["rows"].items()):
        for style, task in (("-", "img2data"), ("--", "data2img")):
            cells = r["by_objects"].get(task)
            if not cells:
                continue
            ns = [n for n in OBJECT_COUNTS if str(n) in cells]
            acc = [100 * cells[str(n)]["accuracy"] for n in ns]
            lo = [a - 100 * cells[str(n)]["ci"][0] for a, n in zip(acc, ns, strict=True)]
            hi = [100 * cells[str(n)]["ci"][1] - a for a, n in zip(acc, ns, strict=True)]
            ax.errorbar(ns, acc, yerr=[lo, hi], color=f"C{i}", linestyle=style, marker="o", capsize=3, label=f"{name} ({task})")
            drawn = True
    if not drawn:
        plt.close(fig)
        return []
    ax.axhline(summary["published"]["Claude 3.5 Sonnet"], color="gray", linestyle=":", label="Claude 3.5 (published, mean)")
    ax.set_xlabel("objects in the scene")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"MATE {summary['name']}: accuracy by object count")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return [save_plot(fig, out_dir, "accuracy_by_objects.png")]


def write_report(run_dir: str | Path, *, plots: bool = True) -> dict[str, Any]:
    """Rebuild summary.json, report.md and the plot of a MATE run folder from its JSONL."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir, "MATE run", "retlink mate run CONFIG")
    cfg = MateRunConfig.model_validate(meta["config"])
    records = require_records(run_dir)
    summary = build_summary(cfg, meta, records)
    write_report_files(
        run_dir,
        summary,
        lambda written: markdown(summary, cfg, written),
        (lambda folder: plot(summary, folder)) if plots else None,
    )
    return summary
