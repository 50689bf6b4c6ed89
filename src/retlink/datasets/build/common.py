"""What every benchmark builder does the same way (`logos.py`, `icons.py`): one place, so the two
benchmarks cannot drift apart in how they are sampled, split, written and checked.

- **Seeded randomness per purpose** (`rng`): each decision draws from its own generator keyed by
  (seed, purpose), so adding a draw in one place never shifts another: the same seed gives the
  same files, byte for byte.
- **The plan** (`plan_samples`): given mention groups (a word -> the entities whose name has it),
  which entities the KB holds, which are NIL (left out, never making a mention name fewer than two
  KB entities), the split of every gold entity (train/dev/test 50/20/30, by entity, so test golds
  were never golds in training) and the (mention word, gold) pairs that become samples.
- **The writer** (`BenchmarkWriter`): MIMIC's WikiMEL layout (`mimic_format.py`), `entities.jsonl`
  (what `retlink kb build` reads) and `manifest.json` (sha256 of every file), written into
  `DIR.partial` and swapped into place only when complete (`core/outdirs.py`).
- **Rendering helpers**: scikit-image's bundled photos and textures as backgrounds, and the
  placement of a rendered drawing on its canvas (rotation, off-centre, panel, crop, resize).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from retlink.core.errors import ConfigError
from retlink.core.outdirs import (
    MARKER,
    check_out_dir,
    check_replaceable,
    remove_partial,
    swap_into_place,
    write_marker,
)

PREFIX = "WIKIMEL"
SPLITS = ("train", "dev", "test")
#: share of the entities (with samples) in each split
SPLIT_SHARES = (0.5, 0.2, 0.3)
MANIFEST = "manifest.json"
ENTITIES = "entities.jsonl"
#: the marker kind of a built benchmark folder (`retlink.core.outdirs`)
DATASET_KIND = "dataset"
#: scikit-image sample images that ship inside the package (no download): backgrounds
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle")
TEXTURES = ("brick", "grass", "gravel", "moon", "camera", "coins", "page")


def rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one purpose (`key`) under `seed`: independent of every other draw."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


# -- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """The knobs of a build (checked here, once for every builder); recorded in the manifest."""

    seed: int
    samples: int
    distractors: int
    limit: int | None
    nil_share: float

    def __post_init__(self) -> None:
        if self.samples < 1 or self.distractors < 0 or (self.limit is not None and self.limit < 1) or not 0 <= self.nil_share < 0.5:
            raise ConfigError("samples must be >= 1, distractors >= 0, limit >= 1 and nil_share in [0, 0.5)")

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "samples": self.samples, "distractors": self.distractors, "limit": self.limit, "nil_share": self.nil_share}


@dataclass(frozen=True)
class Plan:
    """What a build holds: the KB's ids (sorted), the (mention key, gold, n) samples with their
    split, every mention-sharing entity's split and the entities left out of the KB (NIL)."""

    kb_ids: list[str]
    records: list[dict[str, Any]]
    split_of: dict[str, str]
    nil: set[str]


def plan_samples(groups: dict[str, list[str]], others: list[str], params: Params) -> Plan:
    """Which entities go into the KB, which (mention, gold) samples exist, each gold entity's
    split, and the entities left out of the KB (their samples are NIL).

    `groups`: mention key -> the ids of the entities whose name has it (2+ each, sorted by key);
    `others`: the ids that share no mention word (distractor candidates, in a fixed order)."""
    seed, samples, distractors, limit, nil_share = (
        params.seed, params.samples, params.distractors, params.limit, params.nil_share
    )
    keys = sorted(groups)
    if limit is not None:
        order = rng(seed, "groups").permutation(len(keys))
        keys = sorted(keys[i] for i in order[:limit])
    groups = {k: groups[k] for k in keys}
    members = sorted({s for ids in groups.values() for s in ids})
    others = [o for o in others if o not in set(members)]
    picked = rng(seed, "distractors").permutation(len(others))[: min(distractors, len(others))]

    # NIL: a few entities that share a mention word are left out of the KB, never one whose
    # mention words would then name fewer than two KB entities (the mention stays ambiguous)
    groups_of: dict[str, list[str]] = defaultdict(list)
    for key, ids in groups.items():
        for eid in ids:
            groups_of[eid].append(key)
    in_kb = {k: len(v) for k, v in groups.items()}
    nil: set[str] = set()
    for j in rng(seed, "nil").permutation(len(members)):
        if len(nil) >= round(nil_share * len(members)):
            break
        if all(in_kb[k] >= 3 for k in groups_of[members[j]]):
            nil.add(members[j])
            for k in groups_of[members[j]]:
                in_kb[k] -= 1
    kb_ids = sorted([*(m for m in members if m not in nil), *(others[i] for i in picked)])

    # entity-level split: a gold entity's samples all land in its split
    order = rng(seed, "split").permutation(len(members))
    cut1 = round(SPLIT_SHARES[0] * len(members))
    cut2 = cut1 + round(SPLIT_SHARES[1] * len(members))
    split_of = {members[j]: SPLITS[0 if r < cut1 else 1 if r < cut2 else 2] for r, j in enumerate(order)}

    pairs = [(k, s) for k in keys for s in groups[k]]
    if samples >= len(pairs):
        extra = rng(seed, "extra").choice(len(pairs), size=samples - len(pairs), replace=True)
        chosen = list(range(len(pairs))) + sorted(int(i) for i in extra)
    else:
        chosen = sorted(int(i) for i in rng(seed, "pairs").choice(len(pairs), size=samples, replace=False))
    records = []
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for idx in chosen:
        key, eid = pairs[idx]
        n = seen[(key, eid)]
        seen[(key, eid)] += 1
        records.append({"key": f"{key}-{eid}-{n}", "mention_key": key, "id": eid, "split": split_of[eid]})
    return Plan(kb_ids, records, split_of, nil)


def plan_counts(plan: Plan, by_split: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The sample counts every manifest reports (after `entities` and `mention_words`)."""
    return {
        "entities_sharing_a_mention_word": len(plan.split_of),
        "samples": {s: len(by_split[s]) for s in SPLITS},
        # of which NIL (gold left out of the KB; MIMIC's loaders skip them unless include_nil=True)
        "nil_samples": {s: sum(r["answer"] == "nil" for r in by_split[s]) for s in SPLITS},
        "gold_entities": {s: sum(1 for k, v in plan.split_of.items() if v == s and k not in plan.nil) for s in SPLITS},
        "nil_entities": len(plan.nil),
    }


# -- text ------------------------------------------------------------------------------------------


def leaks(text: str, secret: set[str]) -> bool:
    """Whether `text` contains a secret word (3+ letters): a clue must never name the entity."""
    low = text.lower()
    return any(len(s) >= 3 and s in low for s in secret)


def parse_templates(text: str) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Templates written one a line as `clue kinds | sentence` (`| ...` for none), grouped by kinds."""
    out: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for line in text.strip().splitlines():
        kinds, _, template = line.partition("|")
        out[tuple(kinds.split())].append(template.strip())
    return {k: tuple(v) for k, v in out.items()}


def fill_template(
    templates: dict[tuple[str, ...], tuple[str, ...]], clues: dict[str, str], mention: str, rng: np.random.Generator
) -> tuple[str, list[str]]:
    """A sentence with the mention and some of the honest `clues` (or none: a quarter of the
    sentences carry no clue, so only the image can decide); returns (sentence, clue kinds)."""
    options = [k for k in templates if k and all(c in clues for c in k)]
    if rng.random() < 0.25 or not options:
        kind: tuple[str, ...] = ()
    else:
        kind = options[int(rng.integers(len(options)))]
    chosen = templates[kind]
    text = chosen[int(rng.integers(len(chosen)))].format(m=mention, **clues)
    return text[0].upper() + text[1:], list(kind)


# -- rendering -------------------------------------------------------------------------------------


def svg_image(svg: str, size: int) -> Image.Image:
    """An SVG rendered by cairosvg into a `size` px square, transparent where nothing is drawn."""
    import cairosvg

    data = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size)
    return Image.open(io.BytesIO(data)).convert("RGBA")



class Backgrounds:
    """Photos and textures from scikit-image's bundled samples, loaded once as RGB arrays."""

    def __init__(self) -> None:
        import skimage.data as data

        def rgb(name: str) -> np.ndarray:
            arr = getattr(data, name)()
            if isinstance(arr, tuple):  # stereo_motorcycle: (left, right, disparity)
                arr = arr[0]
            arr = np.asarray(arr)
            if arr.ndim == 2:
                arr = np.stack([arr] * 3, axis=-1)
            if arr.dtype != np.uint8:
                arr = (255 * (arr.astype(np.float64) / max(float(arr.max()), 1e-9))).astype(np.uint8)
            return arr[..., :3]

        self.photos = [rgb(n) for n in PHOTOS]
        self.textures = [rgb(n) for n in TEXTURES]

    @staticmethod
    def crop(arr: np.ndarray, size: int, rng: np.random.Generator) -> Image.Image:
        """A random square crop (at least half the short side), resized to `size`."""
        h, w = arr.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        return Image.fromarray(arr[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BILINEAR)


def place(
    canvas: Image.Image,
    drawing: Image.Image,
    rng: np.random.Generator,
    *,
    size: int,
    angle: float,
    panel: tuple[int, ...] | None = None,
    invert: bool = False,
) -> Image.Image:
    """A drawing of `size` px put on the canvas as a photo would show it: rotated by `angle`,
    off-centre, on a rounded `panel` (a sign) when given, then cropped up to 10% from each side
    and resized to a square of 224-288 px (a different size than the KB's)."""
    canvas_size = canvas.width
    drawing = drawing.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    pad = int(size * 0.12)
    span = canvas_size - drawing.width - 2 * pad
    x = pad + int(rng.integers(0, max(span, 0) + 1))
    y = pad + int(rng.integers(0, max(span, 0) + 1))
    if panel is not None:
        plate = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        ImageDraw.Draw(plate).rounded_rectangle(
            (x - pad, y - pad, x + drawing.width + pad, y + drawing.height + pad),
            radius=pad,
            fill=(*panel, int(rng.integers(215, 256))),
        )
        canvas = Image.alpha_composite(canvas.convert("RGBA"), plate).convert("RGB")
    canvas.paste(drawing, (x, y), drawing)
    if invert:
        canvas = ImageOps.invert(canvas)
    c = canvas_size
    left, top = (int(rng.integers(0, c // 10 + 1)) for _ in range(2))
    side = c - max(left, top) - int(rng.integers(0, c // 10 + 1))
    canvas = canvas.crop((left, top, left + side, top + side))
    out = int(rng.integers(224, 289))
    return canvas.resize((out, out), Image.Resampling.BICUBIC)


def jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def library_versions(*packages: str) -> dict[str, str]:
    """Versions whose output bytes the build depends on (a different one may change the sha256s)."""
    import cairocffi

    out = {p: version(p) for p in (*packages, "cairosvg", "pillow", "numpy", "scikit-image")}
    out["libcairo"] = cairocffi.cairo_version_string()
    return out


def progress_bar(progress: bool, console: Any = None) -> Any:
    """The rich progress bar of a build (disabled for tests and `progress=False`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, disable=not progress, console=console, transient=False)


# -- the output folder -----------------------------------------------------------------------------


def digest_files(root: Path) -> dict[str, str]:
    """sha256 of every file under root except the manifest, by relative path (sorted)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in (MANIFEST, MARKER))
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def summary_digests(files: dict[str, str]) -> dict[str, str]:
    """One sha256 per top-level file and per folder (over its files' paths and hashes), and `all`."""
    groups: dict[str, list[str]] = defaultdict(list)
    for path, sha in files.items():
        groups[path.split("/", 1)[0]].append(f"{path} {sha}\n")
    out = {name: hashlib.sha256("".join(lines).encode()).hexdigest() for name, lines in sorted(groups.items())}
    out["all"] = hashlib.sha256("".join(f"{p} {s}\n" for p, s in files.items()).encode()).hexdigest()
    return out


def legacy_dataset(folder: Path) -> bool:
    """A benchmark folder built before the marker: its manifest names this builder's layout."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("layout", {}).get("entities_jsonl") == ENTITIES


def check_target(out: Path) -> Path:
    """Refuse, before any work, an --out that cannot be written or holds something not ours."""
    out = check_out_dir(out)
    check_replaceable(out, DATASET_KIND, legacy=legacy_dataset)
    return out


def write_json_array(path: Path, records: list[dict[str, Any]]) -> None:
    """One record a line inside a JSON array (MIMIC's files are arrays; a line each keeps errors locatable)."""
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    path.write_text(f"[\n{body}\n]\n" if records else "[]\n", encoding="utf-8")


class BenchmarkWriter:
    """Writes one benchmark into `out.partial` (KB images and records, mention images and records),
    then the MIMIC files, `entities.jsonl` and the manifest, and swaps it into place."""

    def __init__(self, out: Path, tag: str) -> None:
        self.out = out
        self.tag = tag
        self.work = out.with_name(out.name + ".partial")
        remove_partial(self.work, DATASET_KIND)
        write_marker(self.work, DATASET_KIND)
        (self.work / "kb_image").mkdir(parents=True)
        (self.work / "mention_image").mkdir()
        self.kb_records: list[dict[str, Any]] = []
        self.jsonl_lines: list[str] = []
        self.qid2id: dict[str, int] = {}
        self.by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}

    def add_entity(self, eid: str, name: str, aliases: list[str], desc: str, image: Image.Image) -> None:
        """One KB entity, its PNG image named after its id; ids number in the order added."""
        file = f"{eid}.png"
        (self.work / "kb_image" / file).write_bytes(png(image))
        self.qid2id[eid] = len(self.kb_records)
        self.kb_records.append(
            {"id": self.qid2id[eid], "type": "entity", "entity_name": quote(name), "desc": desc, "image_list": [file]}
        )
        self.jsonl_lines.append(
            json.dumps(
                {"id": eid, "name": name, "aliases": aliases, "description": desc, "image_paths": [f"kb_image/{file}"]},
                ensure_ascii=False,
            )
        )

    def add_sample(
        self,
        split: str,
        image: Image.Image,
        quality: int,
        *,
        sentence: str,
        mention: str,
        answer: str,
        entities: str,
        extra: dict[str, Any],
    ) -> str:
        """One mention (its JPEG image and its record; `extra` fields are ignored by the loaders)."""
        rid = f"{self.tag}-{split}-{len(self.by_split[split])}"
        (self.work / "mention_image" / f"{rid}.jpg").write_bytes(jpeg(image, quality))
        self.by_split[split].append(
            {
                "id": rid,
                "sentence": sentence,
                "mentions": quote(mention),
                "imgPath": f"{rid}.jpg",
                "answer": answer,
                "entities": entities,
                **extra,
            }
        )
        return rid

    def finish(
        self,
        *,
        dataset: str,
        source: dict[str, Any],
        versions: dict[str, str],
        params: dict[str, Any],
        counts: dict[str, Any],
        started: float,
    ) -> dict[str, Any]:
        """Write the MIMIC files, entities.jsonl and the manifest; swap into place; the manifest."""
        work = self.work
        write_json_array(work / "kb_entity.json", self.kb_records)
        (work / "qid2id.json").write_text(json.dumps(self.qid2id) + "\n")
        (work / ENTITIES).write_text("\n".join(self.jsonl_lines) + "\n", encoding="utf-8")
        for split in SPLITS:
            write_json_array(work / f"{PREFIX}_{split}.json", self.by_split[split])
        files = digest_files(work)
        manifest = {
            "dataset": dataset,
            "source": source,
            "versions": versions,
            "params": params,
            "counts": counts,
            "layout": {
                "entities_jsonl": ENTITIES,
                "splits": {s: f"{PREFIX}_{s}.json" for s in SPLITS},
                "loader": f"{dataset} (or wikimel, unchanged)",
            },
            "digests": summary_digests(files),
            "files": files,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
        swap_into_place(work, self.out, DATASET_KIND, legacy=legacy_dataset)
        manifest["build_seconds"] = round(time.perf_counter() - started, 1)
        return manifest


# -- the committed reference -----------------------------------------------------------------------


def committed_view(manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a manifest worth committing: everything but the per-file list."""
    return {k: v for k, v in manifest.items() if k not in ("files", "build_seconds")}


def compare_manifests(built: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """Differences between a build and a reference manifest (empty when identical), as readable lines."""
    diffs = []
    for key in ("params", "source", "versions", "counts", "digests"):
        a, b = built.get(key), reference.get(key)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                for k in sorted(set(a) | set(b)):
                    if a.get(k) != b.get(k):
                        diffs.append(f"{key}.{k}: built {a.get(k)!r}, reference {b.get(k)!r}")
            else:
                diffs.append(f"{key}: built {a!r}, reference {b!r}")
    return diffs
