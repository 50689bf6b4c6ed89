"""Reports of a run, rebuilt from its records alone: summary.json, report.md and PNG plots.

The main table has one row per pipeline and one column per condition (clean, then each attack),
one table per setting. A cell holds Hits@1 with its bootstrap confidence interval, the drop from
the same pipeline's clean accuracy (paired over samples) and the recovery over the reference
pipeline under the same attack (paired too): the numbers the MEL robustness papers report.
Failed links count as misses (a linker that crashes did not link), and their number is shown.
With two or more adversarial attacks in a setting, `worst case` columns follow (a sample is a
hit only under every attack; see `worst_case_columns`), so a defence is credited only against
the worst of the attacks made on it.

Everything here is deterministic given the records (seeded bootstrap, sorted keys), so two runs
that recorded the same links write the same summary apart from the `timing` block.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from retlink.eval import metrics
from retlink.eval.config import EvalConfig, fraction_text
from retlink.eval.runs import (
    CLEAN,
    REPORT,
    RESULTS,
    accuracy,
    attack_success_rate,
    drop_ratio,
    interval,
    mean,
    pct,
    pct_delta,
    pyplot,
    read_meta,
    read_records,
    require_records,
    rounded,
    save_plot,
    write_report_files,
)

log = logging.getLogger(__name__)

def load_run(run_dir: str | Path) -> tuple[EvalConfig, dict[str, Any], dict[str, dict[str, Any]]]:
    """(config, run metadata, records by key) of a run folder."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    config = EvalConfig.model_validate(meta["config"])
    return config, meta, read_records(run_dir / RESULTS)


def _ci(values: list[float], cfg: EvalConfig, seed: int) -> list[float]:
    return interval(values, cfg.metrics.bootstrap_resamples, cfg.metrics.confidence, seed)


def cell_stats(
    recs: dict[str, dict[str, Any]],
    clean: dict[str, dict[str, Any]] | None,
    reference: dict[str, dict[str, Any]] | None,
    cfg: EvalConfig,
) -> dict[str, Any]:
    """Numbers of one (pipeline, setting, attack) cell; dicts map sample id -> record."""
    ids = sorted(recs)
    correct = [float(recs[i]["correct"]) for i in ids]
    ranks = [recs[i].get("rank") for i in ids]
    out: dict[str, Any] = {
        "n": len(ids),
        "failed": sum(recs[i]["status"] != "ok" for i in ids),
        "hits@1": rounded(accuracy([bool(c) for c in correct])),
        "hits@1_ci": _ci(correct, cfg, seed=0),
        "mrr": rounded(metrics.mrr(ranks)),
    }
    for k in cfg.metrics.hits_at:
        if k != 1:
            out[f"hits@{k}"] = rounded(metrics.hits_at_k(ranks, k))
    if clean is not None:
        paired = [i for i in ids if i in clean]
        diff = [float(clean[i]["correct"]) - float(recs[i]["correct"]) for i in paired]
        out["drop"] = rounded(mean(diff))
        out["drop_ci"] = _ci(diff, cfg, seed=1)
        out["drop_ratio"] = rounded(
            drop_ratio(mean([float(clean[i]["correct"]) for i in paired]), mean([float(recs[i]["correct"]) for i in paired]))
        )
        out["attack_success_rate"] = rounded(
            attack_success_rate(
                [bool(clean[i]["correct"]) for i in paired], [bool(recs[i]["correct"]) for i in paired]
            )
        )
    if reference is not None:
        paired = [i for i in ids if i in reference]
        diff = [float(recs[i]["correct"]) - float(reference[i]["correct"]) for i in paired]
        out["recovery"] = rounded(mean(diff))
        out["recovery_ci"] = _ci(diff, cfg, seed=2)
    return out


#: the worst-case column over every adversarial attack of a setting (per budget: "worst case 8/255")
WORST_CASE = "worst case"


def worst_case_columns(cfg: EvalConfig, setting: Any) -> dict[str, list[str]]:
    """The worst-case columns of one setting: column name -> the attacks it takes the worst of.

    Only adversarial attacks count (`AttackSpec.adversarial`, the attack registry's flag: not the
    `augment` views nor `gaussian_noise`), never clean; text perturbations are settings, not
    attacks, so each setting has its own worst case. With at least two adversarial attacks in the
    setting: `worst case` over all of them (image, text and joint attacks alike: any that fools
    the pipeline counts), plus `worst case 8/255` (or `worst case L2 1`) over those of one image
    budget (`AttackSpec.budget`, norm and eps; attacks that edit the text have none) where at
    least two share it and they are not all of them (then it is the `worst case` column)."""
    adversarial = [a for a in cfg.attacks_in(setting) if a != CLEAN and cfg.attack(a).adversarial]
    if len(adversarial) < 2:
        return {}
    columns = {WORST_CASE: adversarial}
    by_budget: dict[tuple[str, float], list[str]] = defaultdict(list)
    for a in adversarial:
        budget = cfg.attack(a).budget
        if budget is not None:
            by_budget[budget].append(a)
    for (norm, eps), names in sorted(by_budget.items()):
        if 2 <= len(names) < len(adversarial):
            label = fraction_text(eps) if norm == "Linf" else f"{norm} {eps:g}"
            columns[f"{WORST_CASE} {label}"] = names
    return columns


def worst_case_records(
    index: dict[tuple[str, str, str], dict[str, dict[str, Any]]], pipe: str, setting: str, attacks: list[str]
) -> tuple[dict[str, dict[str, Any]], int]:
    """Per sample, the worst of its records under `attacks` (AutoAttack's robust accuracy, Croce &
    Hein 2020): correct only if correct under every one, failed if any link failed (a failed link
    is a miss, as everywhere in the report), the worst rank (None if the gold was unranked under
    any). Only samples recorded under every attack count: one missing a record (an unfinished
    run) is left out, never read as a hit; returns (records by sample id, samples left out)."""
    per_attack = [index.get((pipe, setting, a), {}) for a in attacks]
    recorded = set().union(*per_attack)
    complete = sorted(i for i in recorded if all(i in recs for recs in per_attack))
    out: dict[str, dict[str, Any]] = {}
    for i in complete:
        recs = [r[i] for r in per_attack]
        ranks = [r.get("rank") for r in recs]
        out[i] = {
            "correct": all(bool(r["correct"]) for r in recs),
            "status": "ok" if all(r["status"] == "ok" for r in recs) else "error",
            "rank": None if any(k is None for k in ranks) else max(ranks),
        }
    return out, len(recorded) - len(complete)


def text_drop_stats(
    recs: dict[str, dict[str, Any]], unperturbed: dict[str, dict[str, Any]], cfg: EvalConfig
) -> dict[str, Any]:
    """A text-perturbed cell against the same pipeline and condition in the setting without the
    perturbation (paired over samples): `text_drop` (unperturbed - perturbed Hits@1, with its CI)
    and `text_drop_ratio`, the text-centric paper's drop ratio (clean - perturbed) / clean."""
    paired = sorted(i for i in recs if i in unperturbed)
    before = [float(unperturbed[i]["correct"]) for i in paired]
    after = [float(recs[i]["correct"]) for i in paired]
    diff = [b - a for b, a in zip(before, after, strict=True)]
    return {
        "text_drop": rounded(mean(diff)),
        "text_drop_ci": _ci(diff, cfg, seed=3),
        "text_drop_ratio": rounded(drop_ratio(mean(before), mean(after))),
        "text_drop_n": len(paired),
    }


def unperturbed_setting(cfg: EvalConfig, setting: Any) -> str | None:
    """The setting a text-perturbed one is measured against: the first of the same kind
    (`it2t`, ...) without a text perturbation (None: the setting is not perturbed, or has none)."""
    if setting.text is None:
        return None
    return next((s.name for s in cfg.settings if s.setting == setting.setting and s.text is None), None)


def norm_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Measured perturbation size of one attack (one value per sample; exact and 8-bit)."""
    per_sample: dict[str, dict[str, Any]] = {}
    for r in records:
        if "norms" in r:
            per_sample[r["sample_id"]] = r
    out: dict[str, Any] = {"n": len(per_sample)}
    for field in ("norms", "norms_png"):
        for k in ("linf_255", "l2"):
            values = [r[field][k] for r in per_sample.values()]
            out[f"{field}.{k}.mean"] = rounded(mean(values))
            out[f"{field}.{k}.max"] = rounded(max(values)) if values else None
    return out


def timing_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per link and per graph node, by pipeline (not part of the comparable summary)."""
    by_pipe: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["status"] == "ok":
            by_pipe[r["pipeline"]].append(r)
    out: dict[str, Any] = {}
    for pipe, recs in sorted(by_pipe.items()):
        nodes: dict[str, float] = defaultdict(float)
        for r in recs:
            for node, s in (r.get("nodes") or {}).items():
                nodes[node] += s
        out[pipe] = {
            "links": len(recs),
            "seconds_per_link": rounded(mean([r["seconds"] for r in recs])),
            "node_seconds": {k: round(v, 3) for k, v in sorted(nodes.items())},
            "llm_calls_per_link": rounded(mean([len(r.get("llm_calls") or []) for r in recs])),
            "prompt_tokens_per_link": rounded(mean([r.get("prompt_tokens", 0) for r in recs])),
            "generated_tokens_per_link": rounded(mean([r.get("generated_tokens", 0) for r in recs])),
        }
    attack_s = [r["attack_seconds"] for r in {r["sample_id"] + r["attack"]: r for r in records if "attack_seconds" in r}.values()]
    out["attack_seconds_per_image"] = rounded(mean(attack_s))
    return out


def detector_stats(cfg: EvalConfig, index: dict[tuple[str, str, str], dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per setting and pipeline that runs a detector, per attack: ROC AUC of its scores (clean vs
    attacked), false-positive rate on clean images and detection rate at its threshold."""
    out: dict[str, Any] = {}
    for (pipe, setting, attack), recs in sorted(index.items()):
        clean = index.get((pipe, setting, CLEAN), {})
        if attack == CLEAN or not any("detector_score" in r for r in recs.values()):
            continue
        ids = sorted(i for i in recs if "detector_score" in recs[i] and "detector_score" in clean.get(i, {}))
        stats = metrics.detector_summary(
            [clean[i]["detector_score"] for i in ids],
            [clean[i]["flagged"] for i in ids],
            [recs[i]["detector_score"] for i in ids],
            [recs[i]["flagged"] for i in ids],
        )
        out.setdefault(setting, {}).setdefault(pipe, {})[attack] = {"n": len(ids), **{k: rounded(v) for k, v in stats.items()}}
    return out


def certified_stats(cfg: EvalConfig, index: dict[tuple[str, str, str], dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per setting, pipeline whose records carry certificates (`certified_at`) and condition:
    Hits@1 and, per eps, certified Hits@1, the share of samples answered right AND certified at
    that eps (a failed link is neither), with its bootstrap CI over samples. On the clean
    condition it is a lower bound on Hits@1 under any L-inf image attack of that eps."""
    out: dict[str, Any] = {}
    for (pipe, setting, attack), recs in sorted(index.items()):
        if not any("certified_at" in r for r in recs.values()):
            continue
        ids = sorted(recs)
        labels = list(dict.fromkeys(e for i in ids for e in recs[i].get("certified_at", {})))
        hits = {
            e: [float(bool(recs[i]["correct"]) and bool(recs[i].get("certified_at", {}).get(e))) for i in ids]
            for e in labels
        }
        out.setdefault(setting, {}).setdefault(pipe, {})[attack] = {
            "n": len(ids),
            "hits@1": rounded(accuracy([bool(recs[i]["correct"]) for i in ids])),
            "certified_hits@1": {e: rounded(accuracy([bool(h) for h in v])) for e, v in hits.items()},
            "certified_ci": {e: _ci(v, cfg, seed=0) for e, v in hits.items()},
        }
    return out


def build_summary(cfg: EvalConfig, meta: dict[str, Any], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The whole summary: per setting, per pipeline, per condition cell; norms; timing."""
    index: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in records.values():
        index[(r["pipeline"], r["setting"], r["attack"])][r["sample_id"]] = r
    ref = cfg.reference_pipeline()
    from retlink.eval.pipelines import attack_encoder, is_transfer, pipeline_image_encoder

    encoders = {p.name: pipeline_image_encoder(p) for p in cfg.pipelines}
    made_on = {a.name: attack_encoder(a) for a in cfg.attacks}
    settings: dict[str, Any] = {}
    for s in cfg.settings:
        conditions = cfg.attacks_in(s)
        worst = worst_case_columns(cfg, s)
        rows: dict[str, Any] = {}
        for p in cfg.pipelines:
            if p.name not in cfg.pipelines_in(s):
                continue
            row = {}
            for a in conditions:
                recs = index.get((p.name, s.name, a))
                if not recs:
                    continue
                clean = index.get((p.name, s.name, CLEAN)) if a != CLEAN else None
                reference = index.get((ref, s.name, a)) if ref and ref != p.name else None
                row[a] = cell_stats(recs, clean, reference, cfg)
                if a in made_on and is_transfer(encoders[p.name], made_on[a]):
                    # made on other weights than the pipeline's image encoder: not white box
                    row[a]["transfer"] = True
                base = unperturbed_setting(cfg, s)
                if base is not None and index.get((p.name, base, a)):
                    row[a].update(text_drop_stats(recs, index[(p.name, base, a)], cfg))
            for col, attacks in worst.items():
                recs, left_out = worst_case_records(index, p.name, s.name, attacks)
                if not recs:
                    continue
                clean = index.get((p.name, s.name, CLEAN))
                reference = worst_case_records(index, ref, s.name, attacks)[0] if ref and ref != p.name else None
                row[col] = cell_stats(recs, clean, reference or None, cfg) | {"attacks": attacks, "left_out": left_out}
                if all(a in made_on and is_transfer(encoders[p.name], made_on[a]) for a in attacks):
                    # every attack of the column made on other weights: no white-box worst case
                    row[col]["transfer"] = True
            rows[p.name] = row
        settings[s.name] = {"setting": s.setting, "conditions": conditions, "pipelines": rows}
        if worst:
            settings[s.name]["worst_case"] = worst
        if unperturbed_setting(cfg, s) is not None:
            settings[s.name]["unperturbed"] = unperturbed_setting(cfg, s)
    attacks = {}
    for a in cfg.attacks:
        spec = {
            "attack": a.attack,
            "preset": a.preset,
            "target": a.target,
            "surrogate": a.surrogate,
            "made_on": made_on[a.name],
            "eps": a.eps,
            "params": a.resolved_params(),
        }
        spec["measured"] = norm_stats([r for r in records.values() if r["attack"] == a.name])
        attacks[a.name] = spec
    detectors = detector_stats(cfg, index)
    certified = certified_stats(cfg, index)
    planned = len(meta.get("samples", []))
    expected = planned * sum(len(cfg.pipelines_in(s)) * len(cfg.attacks_in(s)) for s in cfg.settings)
    return {
        "name": cfg.name,
        "fingerprint": meta.get("fingerprint"),
        "dataset": cfg.dataset.model_dump(mode="json"),
        "reference": ref,
        "samples": planned,
        "records": len(records),
        "expected_records": expected,
        "complete": len(records) >= expected and all(r["status"] == "ok" for r in records.values()),
        "settings": settings,
        "attacks": attacks,
        "detectors": detectors,
        # only for runs with a pipeline that certifies its answers: other summaries keep their keys
        **({"certified": certified} if certified else {}),
        "timing": timing_stats(list(records.values())),
    }


# -- Markdown ---------------------------------------------------------------------------------


def format_cell(c: dict[str, Any], is_reference: bool) -> str:
    """'83.3 [58.3, 100.0]<br>drop 41.7 · rec +25.0' (percent points)."""
    lo, hi = c["hits@1_ci"]
    text = f"**{pct(c['hits@1'])}** [{pct(lo)}, {pct(hi)}]"
    extra = []
    if "drop" in c:
        extra.append(f"drop {pct(c['drop'])}")
        if c.get("drop_ratio") is not None:
            extra.append(f"DR {c['drop_ratio']:.2f}")
        if c.get("attack_success_rate") is not None:
            extra.append(f"ASR {pct(c['attack_success_rate'])}")
    if "text_drop" in c:
        extra.append(f"text drop {pct(c['text_drop'])} [{pct(c['text_drop_ci'][0])}, {pct(c['text_drop_ci'][1])}]")
        if c.get("text_drop_ratio") is not None:
            extra.append(f"text DR {c['text_drop_ratio']:.2f}")
    if "recovery" in c and not is_reference and c["recovery"] is not None:
        extra.append(f"rec {pct_delta(c['recovery'])}")
    if c["failed"]:
        extra.append(f"{c['failed']} failed")
    if c.get("left_out"):
        extra.append(f"{c['left_out']} not recorded under every attack, left out")
    if c.get("transfer"):
        extra.append("*transfer*")
    return text + ("<br>" + " · ".join(extra) if extra else "")


def markdown(summary: dict[str, Any], cfg: EvalConfig, plots: list[str]) -> str:
    """The report: main tables, norms, plots, and how to read them."""
    level = round(100 * cfg.metrics.confidence)
    lines = [
        f"# Robustness report: {summary['name']}",
        "",
        f"Dataset `{cfg.dataset.key}` ({cfg.dataset.split or 'all splits'}), {summary['samples']} samples; "
        f"{summary['records']}/{summary['expected_records']} links recorded"
        + ("" if summary["complete"] else " (**incomplete or with failures**)")
        + f". Config fingerprint `{summary['fingerprint']}`.",
        "",
        f"Cells: Hits@1 in % with its {level}% bootstrap CI; *drop*: clean minus attacked Hits@1 of the same "
        "pipeline; *DR*: drop ratio, (clean - attacked) / clean, lower is better; *ASR*: attack success rate, "
        "the share of the clean-correct samples the attack breaks; "
        f"*rec*: Hits@1 minus the reference pipeline's (`{summary['reference']}`) under the same "
        "attack. Drop and recovery are paired over samples. Failed links count as misses. *transfer*: the attack "
        "was made on other image weights than the pipeline's image embedder (not white box; see the attacks' "
        "*made on* below); on a worst-case cell, every attack of its column was.",
        "",
    ]
    if any("worst_case" in st for st in summary["settings"].values()):
        lines += [
            "*worst case*: per sample, a hit only if it is a hit under every adversarial attack of the setting "
            "(AutoAttack's robust accuracy, Croce & Hein 2020; clean and the non-adversarial conditions, "
            "`augment` views and `gaussian_noise`, left out); *worst case 8/255* and the like: the same over the "
            "attacks of that budget. A failed link is a miss; a sample without a record under every one of the "
            "attacks is left out of the cell (their number is shown). Its drop and *rec* are paired as above, "
            "*rec* against the reference pipeline's worst case over the same attacks; the attacks of each column "
            "are listed under its table.",
            "",
        ]
    if any("unperturbed" in st for st in summary["settings"].values()):
        lines += [
            "Text-perturbed settings: *text drop* is the same pipeline's Hits@1 in the unperturbed setting "
            "named in the heading minus in this one, under the same condition (paired over samples, with its "
            "CI); *text DR*: its drop ratio, (clean - perturbed) / clean.",
            "",
        ]
    for name, st in summary["settings"].items():
        against = f", text perturbed; against `{st['unperturbed']}`" if st.get("unperturbed") else ""
        lines += [f"## Setting `{name}` ({st['setting']}{against})", ""]
        columns = st["conditions"] + list(st.get("worst_case", {}))
        lines.append("| pipeline | " + " | ".join(columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        for pipe, row in st["pipelines"].items():
            cells = [format_cell(row[a], pipe == summary["reference"]) if a in row else "–" for a in columns]
            lines.append(f"| {pipe} | " + " | ".join(cells) + " |")
        lines.append("")
        if st.get("worst_case"):
            over = "; ".join(f"*{col}* = {', '.join(attacks)}" for col, attacks in st["worst_case"].items())
            lines += [f"Worst-case columns: {over}.", ""]
        mrr_ks = [k for k in cfg.metrics.hits_at if k != 1]
        if mrr_ks:
            lines.append("<details><summary>MRR and Hits@k</summary>\n")
            lines.append("| pipeline | condition | MRR | " + " | ".join(f"H@{k}" for k in mrr_ks) + " |")
            lines.append("|---|---|---|" + "---|" * len(mrr_ks))
            for pipe, row in st["pipelines"].items():
                for a, c in row.items():
                    hk = " | ".join(pct(c.get(f"hits@{k}")) for k in mrr_ks)
                    lines.append(f"| {pipe} | {a} | {c['mrr']:.3f} | {hk} |")
            lines.append("\n</details>\n")
    if summary["attacks"]:
        lines += [
            "## Attacks and measured perturbations",
            "",
            "L∞ in 1/255 units and L2 of attacked − clean over the 224×224 inputs; *8-bit*: after rounding "
            "to the PNG grid (what the pipelines receive).",
            "",
            "| attack | method | target (made on) | budget | L∞ mean / max | L∞ 8-bit max | L2 mean |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, a in summary["attacks"].items():
            m = a["measured"]
            budget = fraction_text(a["eps"]) if a["eps"] is not None else "–"
            steps = a["params"].get("steps")
            method = f"{a['attack']}" + (f", {steps} steps" if steps else "")
            lines.append(
                f"| {name} | {method} | {a['target']} ({a.get('made_on', a['surrogate'])}) | {budget} | "
                f"{_fmt(m.get('norms.linf_255.mean'))} / {_fmt(m.get('norms.linf_255.max'))} | "
                f"{_fmt(m.get('norms_png.linf_255.max'))} | {_fmt(m.get('norms.l2.mean'))} |"
            )
        lines.append("")
    if summary.get("detectors"):
        lines += [
            "## Detectors",
            "",
            "Pipelines that run the perturbation detector, scored as a detector per attack: ROC AUC of its "
            "scores (clean images negative, attacked positive), false-positive rate on the clean images and "
            "detection rate on the attacked ones at the configured threshold. Under an adaptive attack the "
            "score is the one of the variant kept per sample.",
            "",
            "| setting | pipeline | attack | ROC AUC | FPR clean | detected | n |",
            "|---|---|---|---|---|---|---|",
        ]
        for setting, pipes in summary["detectors"].items():
            for pipe, attacks in pipes.items():
                for attack, d in attacks.items():
                    lines.append(
                        f"| {setting} | {pipe} | {attack} | {_fmt(d['roc_auc'])} | {pct(d['fpr_clean'])} | "
                        f"{pct(d['detection_rate'])} | {d['n']} |"
                    )
        lines.append("")
    if summary.get("certified"):
        lines += _certified_lines(summary["certified"])
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    timing = summary["timing"]
    lines += [
        "## Timing",
        "",
        "| pipeline | links | s / link | LLM calls / link | prompt tokens / link | generated tokens / link |",
        "|---|---|---|---|---|---|",
    ]
    for pipe, t in timing.items():
        if isinstance(t, dict):
            lines.append(
                f"| {pipe} | {t['links']} | {_fmt(t['seconds_per_link'])} | {_fmt(t.get('llm_calls_per_link'))} | "
                f"{_fmt(t.get('prompt_tokens_per_link'))} | {_fmt(t.get('generated_tokens_per_link'))} |"
            )
    if timing.get("attack_seconds_per_image") is not None:
        lines.append(f"\nAttacks: {_fmt(timing['attack_seconds_per_image'])} s per image.")
    return "\n".join(lines) + "\n"


def _certified_lines(certified: dict[str, Any]) -> list[str]:
    """The certified Hits@1 section: one table per set of eps, one row per pipeline and condition."""
    lines = [
        "## Certified Hits@1",
        "",
        "Pipelines that certify their answers: *cert@eps* is the share of samples answered right AND "
        "certified at that L∞ budget (no image perturbation within it can change the answer, on the "
        "pipeline's input pixels). On clean images it is a lower bound on Hits@1 under any such attack.",
        "",
    ]
    for setting, pipes in certified.items():
        labels = list(dict.fromkeys(e for conds in pipes.values() for c in conds.values() for e in c["certified_hits@1"]))
        lines.append("| setting | pipeline | condition | Hits@1 | " + " | ".join(f"cert@{e}" for e in labels) + " | n |")
        lines.append("|---|---|---|---|" + "---|" * len(labels) + "---|")
        for pipe, conds in pipes.items():
            for cond, c in conds.items():
                cells = " | ".join(_with_ci(c["certified_hits@1"].get(e), c.get("certified_ci", {}).get(e)) for e in labels)
                lines.append(f"| {setting} | {pipe} | {cond} | {pct(c['hits@1'])} | {cells} | {c['n']} |")
        lines.append("")
    return lines


def _with_ci(x: float | None, ci: list[float] | None) -> str:
    """'40.0 [30.0, 50.0]' (the CI when there is one)."""
    return pct(x) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if x is not None and ci else "")


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


# -- plots ------------------------------------------------------------------------------------


def plot_run(summary: dict[str, Any], out_dir: Path) -> list[str]:
    """accuracy_vs_eps_<setting>.png and bars_<setting>.png; returns paths relative to the run."""
    plt = pyplot()
    written: list[str] = []
    attacks = summary["attacks"]
    for sname, st in summary["settings"].items():
        rows = st["pipelines"]
        # accuracy vs epsilon: one line per (pipeline, attack family), clean at eps 0
        families: dict[tuple[str, str, str], list[tuple[float, str]]] = defaultdict(list)
        for a in st["conditions"]:
            spec = attacks.get(a)
            if spec and spec["eps"] is not None and spec["params"].get("norm", "Linf") == "Linf":
                families[(spec["attack"], spec["target"], spec["preset"])].append((spec["eps"] * 255, a))
        if families and any(len(v) >= 1 for v in families.values()):
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            styles = ["-", "--", ":", "-."]
            for color, (pipe, row) in enumerate(rows.items()):
                for style, ((method, target, _), points) in enumerate(sorted(families.items())):
                    pts = sorted(points)
                    xs = ([0.0] if CLEAN in row else []) + [x for x, a in pts if a in row]
                    ys = ([row[CLEAN]["hits@1"]] if CLEAN in row else []) + [row[a]["hits@1"] for x, a in pts if a in row]
                    if len(xs) >= 2:
                        ax.plot(
                            xs,
                            [100 * y for y in ys],
                            marker="o",
                            color=f"C{color}",
                            linestyle=styles[style % len(styles)],
                            label=f"{pipe} · {method} ({target})",
                        )
            ax.set_xlabel("L∞ budget ε (×1/255)")
            ax.set_ylabel("Hits@1 (%)")
            ax.set_ylim(-2, 102)
            ax.set_title(f"{summary['name']}: accuracy vs ε ({sname})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            written.append(save_plot(fig, out_dir, f"accuracy_vs_eps_{sname}.png"))
        # bars per condition, one bar per pipeline, CI as error bars
        conds = st["conditions"]
        pipes = list(rows)
        if conds and pipes:
            fig, ax = plt.subplots(figsize=(max(6.4, 1.1 * len(conds) * max(1, len(pipes)) / 2), 4.2))
            width = 0.8 / len(pipes)
            xs = np.arange(len(conds))
            for i, pipe in enumerate(pipes):
                vals, err_lo, err_hi = [], [], []
                for a in conds:
                    c = rows[pipe].get(a)
                    v = 100 * c["hits@1"] if c else float("nan")
                    vals.append(v)
                    err_lo.append(v - 100 * c["hits@1_ci"][0] if c else 0)
                    err_hi.append(100 * c["hits@1_ci"][1] - v if c else 0)
                ax.bar(xs + (i - (len(pipes) - 1) / 2) * width, vals, width, yerr=[err_lo, err_hi], capsize=3, label=pipe)
            ax.set_xticks(xs, conds, rotation=20, ha="right")
            ax.set_ylabel("Hits@1 (%)")
            ax.set_ylim(0, 105)
            ax.set_title(f"{summary['name']}: Hits@1 per condition ({sname})")
            ax.legend(fontsize=8)
            ax.grid(axis="y", alpha=0.3)
            written.append(save_plot(fig, out_dir, f"bars_{sname}.png"))
    return written


def write_report(run_dir: str | Path, *, plots: bool = True) -> dict[str, Any]:
    """Rebuild summary.json, report.md and the plots of a run folder from its JSONL."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    cfg = EvalConfig.model_validate(meta["config"])
    summary = build_summary(cfg, meta, require_records(run_dir))
    write_report_files(
        run_dir,
        summary,
        lambda written: markdown(summary, cfg, written),
        (lambda folder: plot_run(summary, folder)) if plots else None,
    )
    log.info("report written to %s", run_dir / REPORT)
    return summary


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without what legitimately differs between identical runs (timings)."""
    return {k: v for k, v in summary.items() if k != "timing"}


def compare_runs(run_a: str | Path, run_b: str | Path) -> list[dict[str, Any]]:
    """Hits@1 of every (setting, pipeline, condition) cell present in both runs, with the delta
    (b - a) and whether the two CIs overlap. Summaries are rebuilt from the JSONL."""
    rows = []
    sums = []
    for d in (run_a, run_b):
        cfg, meta, records = load_run(d)
        sums.append(build_summary(cfg, meta, records))
    a, b = sums
    for sname, st in a["settings"].items():
        other = b["settings"].get(sname)
        if not other:
            continue
        for pipe, row in st["pipelines"].items():
            for cond, ca in row.items():
                cb = other["pipelines"].get(pipe, {}).get(cond)
                if cb is None:
                    continue
                overlap = ca["hits@1_ci"][0] <= cb["hits@1_ci"][1] and cb["hits@1_ci"][0] <= ca["hits@1_ci"][1]
                rows.append(
                    {
                        "setting": sname,
                        "pipeline": pipe,
                        "condition": cond,
                        "a": ca["hits@1"],
                        "b": cb["hits@1"],
                        "delta": rounded(cb["hits@1"] - ca["hits@1"]),
                        "ci_overlap": overlap,
                        "n_a": ca["n"],
                        "n_b": cb["n"],
                    }
                )
    return rows


def compare_markdown(rows: list[dict[str, Any]], run_a: str, run_b: str) -> str:
    lines = [
        f"# Comparison: `{run_a}` (a) vs `{run_b}` (b)",
        "",
        "| setting | pipeline | condition | H@1 a | H@1 b | b − a | CIs overlap |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['pipeline']} | {r['condition']} | {pct(r['a'])} | {pct(r['b'])} | "
            f"{pct_delta(r['delta'])} | {'yes' if r['ci_overlap'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"
