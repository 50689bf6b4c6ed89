"""Run bookkeeping shared by the eval runner and the MATE runner: one module, so both keep
their run folders, resume and report numbers the same way.

- the run folder (`run_dir`): `run.json` (name, config fingerprint, config, first creation time:
  `write_meta`; a resumed run of another config is refused: `resume_meta`) and `results.jsonl`,
  one durable record per (item, model, setting, attack) (`RecordLog`, `Recorder`,
  `read_records`, `done_keys`); `CLEAN` names the unattacked condition, done first (`by_attack`);
- the report files of a run folder (`write_report_files`: summary.json, report.md, plots/ by
  `save_plot`);
- the statistics both reports use: accuracy, drop, drop ratio, attack success rate, seeded
  bootstrap intervals (`interval`), and their text: `pct` (a share as a percentage), `pct_ci`
  (a percentage with its interval), `pct_delta` (a signed difference in percentage points).

Why a JSONL log and not a database: it is the artefact people share and grep, a report rebuilds
everything from it alone, and append + flush + fsync of one line is atomic enough for resuming.
A crash can at worst leave a torn last line (no newline): `RecordLog` cuts it off before the next
append, so a resumed run never glues a new record onto half an old one, and the key of the torn
record is simply run again. Reading keeps the last record of each key, so nothing counts twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from retlink.core.errors import ConfigError

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
#: a run folder's metadata: its config and fingerprint (eval and MATE runs alike)
RUN_META = "run.json"
#: what a report writes into the run folder
SUMMARY = "summary.json"
REPORT = "report.md"
PLOTS = "plots"
#: the unattacked condition: an attack cannot take the name, and it runs first
CLEAN = "clean"


def fingerprint(data: dict[str, Any]) -> str:
    """Hash of a config's result-changing part (the caller drops what does not change results:
    output folder, concurrency, connection details), so a resumed run refuses to mix records of
    two different experiments."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def check_unique_names(groups: dict[str, list[str]]) -> None:
    """A ValueError naming the group and the names used twice in it: names of a run config's
    models, pipelines, prompts, attacks and settings key its records and name its folders."""
    for what, names in groups.items():
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{what}: duplicate name(s) {', '.join(dupes)}")


def run_dir(output_dir: Path, name: str, out: Path | None = None) -> Path:
    """Where a run writes: `out` if given, else `output_dir/name`."""
    return Path(out) if out is not None else Path(output_dir) / name


def read_meta(run_dir: Path, what: str = "run", command: str = "retlink eval run CONFIG") -> dict[str, Any]:
    """The metadata of an existing run folder (for its report); ConfigError if it is none."""
    path = run_dir / RUN_META
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a {what} folder (no {RUN_META}); run `{command}` first")
    return json.loads(path.read_text())


def resume_meta(run_dir: Path, fingerprint: str) -> dict[str, Any]:
    """The metadata a run folder holds so far ({} for a new one); a ConfigError when it holds a
    run of another config, so a resumed run never mixes the records of two experiments."""
    path = run_dir / RUN_META
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    if old.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"{run_dir} holds a run of a different config (fingerprint {old.get('fingerprint')} != "
            f"{fingerprint}); pick another --out or delete the folder"
        )
    return old


def write_meta(run_dir: Path, config: Any, old: dict[str, Any], **extra: Any) -> None:
    """Write the folder's metadata (name, fingerprint, first creation time, the config and
    `extra`) in one rename, so a kill never leaves half of it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": config.name,
        "fingerprint": config.fingerprint(),
        "created": old.get("created") or datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.model_dump(mode="json"),
        **extra,
    }
    tmp = (run_dir / RUN_META).with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(run_dir / RUN_META)


def record_key(sample_id: str, pipeline: str, setting: str, attack: str) -> str:
    """The identity of one record in a run: (sample, pipeline, setting, attack) of an eval run,
    (question, model, prompt, attack) of a MATE run."""
    return f"{sample_id}|{pipeline}|{setting}|{attack}"


class _Attacked(Protocol):
    @property
    def attack(self) -> str: ...


_JobT = TypeVar("_JobT", bound=_Attacked)


def by_attack(jobs: Iterable[_JobT]) -> list[tuple[str, list[_JobT]]]:
    """Jobs grouped by their `attack`, groups in order of first appearance (the runners plan
    `CLEAN` first, so an attack's images are made just before its own jobs run)."""
    groups: dict[str, list[_JobT]] = {}
    for j in jobs:
        groups.setdefault(j.attack, []).append(j)
    return list(groups.items())


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, raw line, ends with newline) of a file."""
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            yield n, raw, raw.endswith(b"\n")


def read_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """Records by key, the last one of each key winning; a torn or malformed line is skipped
    with a warning (a torn last line is what a kill mid-write leaves)."""
    path = Path(path)
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for n, raw, complete in _lines(path):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            key = rec["key"]
        except (ValueError, KeyError, TypeError):
            what = "torn last line" if not complete else "malformed line"
            log.warning("%s:%d: %s skipped", path, n, what)
            continue
        if not complete:
            log.warning("%s:%d: last line has no newline (interrupted write); kept, it parses", path, n)
        out[key] = rec
    return out


def done_keys(run_dir: Path) -> set[str]:
    """Keys a run folder has recorded as ok: what a resumed run skips (a failed record is run
    again)."""
    return {k for k, r in read_records(Path(run_dir) / RESULTS).items() if r.get("status") == "ok"}


class RecordLog:
    """Append-only writer of records; one writer per run (the runner's main thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._fh = self.path.open("ab")

    def _repair_tail(self) -> None:
        """Cut a torn last line so the next append starts on a line of its own."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return
            # find the last newline; everything after it is the torn record
            pos = size
            block = 4096
            while pos > 0:
                start = max(0, pos - block)
                fh.seek(start)
                chunk = fh.read(pos - start)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    cut = start + i + 1
                    break
                pos = start
            else:
                cut = 0
            log.warning("%s: cutting a torn last record (%d bytes)", self.path, size - cut)
            fh.truncate(cut)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line and make it durable before returning."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
        self._fh.write(line.encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def recorded_feature_names(records: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Per pipeline, the feature names of its first recorded link that carries features."""
    out: dict[str, list[str]] = {}
    for rec in records:
        names = (rec.get("features") or {}).get("names")
        if names is not None:
            out.setdefault(rec["pipeline"], list(names))
    return out


def recorded_feature_definitions(records: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Per pipeline, the feature definition (`PoolFeatures.definition`) of its first recorded
    link that carries one (links from before definitions were recorded carry none)."""
    out: dict[str, str] = {}
    for rec in records:
        definition = (rec.get("features") or {}).get("definition")
        if definition is not None:
            out.setdefault(rec["pipeline"], definition)
    return out


class Recorder:
    """What a runner does with each finished record: append it durably (`RecordLog`), count it
    and the failed ones (a failed record counts as a miss and is run again on resume), and hand
    it to `on_record` (live dashboards; tests use it to interrupt a run)."""

    def __init__(self, run_dir: Path, on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = Path(run_dir) / RESULTS
        #: per pipeline, the feature names and definition its recorded links carry (a resumed run
        #: must match)
        records = list(read_records(self.path).values()) if self.path.exists() else []
        self._features = recorded_feature_names(records)
        self._definitions = recorded_feature_definitions(records)
        self._log = RecordLog(self.path)
        self._on_record = on_record
        self.written = 0
        self.failed = 0

    def add(self, record: dict[str, Any]) -> None:
        """Append one record; a ConfigError (nothing appended) when its features are not the
        ones the run's earlier links of that pipeline recorded: the code that computes them
        changed since, and mixing the two would train or report on two feature sets at once."""
        features = record.get("features") or {}
        names, definition = features.get("names"), features.get("definition")
        if names is not None:
            before = self._features.setdefault(record["pipeline"], list(names))
            if before != list(names):
                raise ConfigError(
                    f"{self.path} holds links of pipeline {record['pipeline']!r} with features {before}, "
                    f"but this code records {list(names)}: the features changed since those links were made. "
                    f"Start the run afresh (delete {self.path}, or pass another --out)"
                )
        if definition is not None:
            before_def = self._definitions.setdefault(record["pipeline"], definition)
            if before_def != definition:
                raise ConfigError(
                    f"{self.path} holds links of pipeline {record['pipeline']!r} whose features were computed "
                    f"another way (definition {before_def}; this code: {definition}; a size, threshold or "
                    f"formula changed). Start the run afresh (delete {self.path}, or pass another --out)"
                )
        self._log.append(record)
        self.written += 1
        self.failed += record["status"] != "ok"
        if self._on_record:
            self._on_record(record)

    def summary(self, what: str) -> str:
        """'12 links recorded, 1 failed, in runs/x/results.jsonl' (rich markup)."""
        return f"[bold]{self.written - self.failed}[/] {what} recorded, [red]{self.failed}[/] failed, in {self.path}"

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self._log.close()


def require_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The records of a run folder for its report; a ConfigError when there are none yet."""
    records = read_records(Path(run_dir) / RESULTS)
    if not records:
        raise ConfigError(f"{run_dir} has no records yet ({RESULTS} is empty or missing)")
    return records


def write_report_files(
    run_dir: Path,
    summary: dict[str, Any],
    markdown: Callable[[list[str]], str],
    plot: Callable[[Path], list[str]] | None = None,
) -> None:
    """Write a report into its run folder: the plots (`plot(folder)` returns their paths relative
    to the run folder), summary.json (sorted keys: two identical runs write identical files) and
    report.md (`markdown(plot paths)`)."""
    run_dir = Path(run_dir)
    written = plot(run_dir / PLOTS) if plot is not None else []
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True))
    (run_dir / REPORT).write_text(markdown(written))


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (a report draws on no screen), imported
    only when a report draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plot(fig: Any, folder: Path, name: str) -> str:
    """Write a report's figure as `folder/name` (PNG) and close it; the path relative to the run
    folder, as report.md links it."""
    folder.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(folder / name, dpi=120)
    pyplot().close(fig)
    return f"{PLOTS}/{name}"

# -- the statistics of both reports ------------------------------------------------------------


def accuracy(correct: Sequence[bool]) -> float:
    """Share of correct answers (for a linker: predicted entity == gold, NIL included)."""
    c = np.asarray(correct, dtype=bool)
    return float(c.mean()) if c.size else float("nan")


def absolute_drop(clean: float, attacked: float) -> float:
    """Clean minus attacked accuracy, in accuracy units (0.80 -> 0.50 is 0.30)."""
    return clean - attacked


def drop_ratio(clean: float, attacked: float) -> float:
    """The drop as a share of the clean accuracy, (clean - attacked) / clean (0.80 -> 0.50 is
    0.375): lower is better, 0 means untouched by the attack. As the text-centric adversarial
    prompting paper defines it; nan when clean is 0."""
    return (clean - attacked) / clean if clean else float("nan")


def attack_success_rate(clean_correct: Sequence[bool], attacked_correct: Sequence[bool]) -> float:
    """Among samples the pipeline got right on the clean input, the share it gets wrong attacked.

    Samples wrong on the clean input are excluded: an attack cannot be credited for them.
    nan when no sample was right to begin with.
    """
    c = np.asarray(clean_correct, dtype=bool)
    a = np.asarray(attacked_correct, dtype=bool)
    if c.shape != a.shape:
        raise ValueError("clean and attacked results must cover the same samples")
    return float(np.mean(~a[c])) if c.any() else float("nan")


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic` over per-sample `values`.

    Seeded, so a report reproduces its intervals. For paired comparisons (recovery, drop),
    pass the per-sample differences so both arms are resampled together.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_resamples, v.size))
    stats = np.array([statistic(v[row]) for row in idx])
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def mean(values: Sequence[float]) -> float:
    """The mean; nan for no values (a cell nobody answered, not a zero)."""
    return float(np.mean(values)) if len(values) else float("nan")


def rounded(x: float | None) -> float | None:
    """A number as a report stores it: 4 decimals, None for nan or missing (JSON has no nan)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def interval(values: Sequence[float], resamples: int, confidence: float, seed: int) -> list[float]:
    """`bootstrap_ci` of the mean of `values`, rounded as a report stores it: [lo, hi]."""
    lo, hi = bootstrap_ci(values, n_resamples=resamples, confidence=confidence, seed=seed)
    return [round(lo, 4), round(hi, 4)]


# -- numbers as report text --------------------------------------------------------------------


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal ('83.3'); '–' when there is none."""
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def pct_delta(x: float | None) -> str:
    """A difference of shares in signed percentage points ('+6.2'); '–' when there is none."""
    return "–" if x is None or x != x else f"{100 * x:+.1f}"


def pct_ci(x: float | None, ci: Sequence[float] | None) -> str:
    """A share as a percentage with its interval in whole percent ('83.3 [58, 100]'); '–' when
    there is no share."""
    if x is None or x != x:
        return "–"
    if not ci:
        return pct(x)
    lo, hi = ci
    return f"{pct(x)} [{100 * lo:.0f}, {100 * hi:.0f}]"
