"""Build the `icons` MEL benchmark from Iconify icon sets (npm packages `@iconify-json/PREFIX`).

Why this data: the logos benchmark links a brand to its own logo, so a mention image and its KB
image are two renderings of one drawing. Here one concept ("bell", "camera", "home") is drawn by
many icon sets, each by other hands and in its own style (stroke or fill, round or square, thin or
bold), so the mention image is another drawing of the same idea, not another rendering of the
same file: what the image encoder must recognise is the concept. The nine sets pinned in
`src/retlink/data/icons/sources.txt` (Tabler, Lucide, Phosphor, Bootstrap, Remix, Carbon,
Iconoir, Heroicons, Material Design Icons; MIT, ISC or Apache-2.0) are fetched once by
`make icons-sources` (`scripts/icons.sh`: `npm pack` at pinned versions, sha512 checked); the
builder reads only that local folder (`--sources`), nothing downloads at run time.

Construction (deterministic from `seed`; the shared steps are `common.py`'s, as for logos):

- **Concept** = the words of an icon name, lower case (`bell-ringing` -> "bell ringing"), over
  every icon and every plain alias (`{parent}` only; an alias that flips or rotates its parent is
  another drawing and is skipped, as are hidden icons). One trailing style word is dropped: the
  suffixes the set's `metadata.json` declares (Phosphor's thin/light/bold/fill/duotone, Remix's
  line/fill, Heroicons' solid), else `fill`, `filled`, `outline`, `outlined`, `solid`. Why only a
  trailing one, and only these: "light" or "line" inside a name is content ("traffic light"),
  and a style is what distinguishes the hands, not the concept. Names with a number are dropped
  (`home-2`, `battery-1`, Heroicons' `20-solid`): a number is a size, a level or an alternative
  drawing, and no two sets number alike. When one set draws a concept several times (`bell`,
  `bell-filled`), its **plain variant** is kept: no style word before an outline style before a
  filled one, an icon before an alias, then the name; one drawing per (set, concept), so the
  sets compare like for like. A concept drawn by **2+ sets** is a KB candidate.
- **Mention words**: every concept word (letters only, 3+ characters, not a stop word) that two
  or more candidate concepts share ("bell" in "bell", "bell off", "bell ringing"): the mention is
  ambiguous by construction and only the image (or an honest clue) decides. Every concept with
  such a word is in the KB, plus `distractors` other candidates drawn at random.
- **KB entity**: id = the concept's words joined by "-"; name = the concept; aliases = its mention
  words; description = only what the packages say: the words, the sets that draw it, the
  categories the sets file its icons under (Carbon, Iconoir, MDI and Remix ship categories), and
  the set and licence of the KB image. **KB image**: the concept as drawn by one of its sets,
  chosen at random per concept from the seed (so no set is "the" KB style), near-black on white.
- **Sample**: a (mention word, gold concept) pair; the mention image is the concept drawn by
  **another set** than the KB image's (a seeded choice among the rest: different hands), rendered
  with light variation (ink colour, plain, photo or texture background from scikit-image's
  bundled samples, scale, a few degrees of rotation, off-centre, cropped, JPEG). The sentence holds
  the mention and at most one honest clue (a category of the concept's icons, never one that
  contains another word of its name); about a quarter carry none.
- **NIL** (`nil_share`), **split by entity** (train/dev/test 50/20/30) and the files (MIMIC's
  WikiMEL layout, `entities.jsonl`, `manifest.json` with the sha256 of every file and of each
  set's icons.json; `DIR.partial` swapped into place): exactly as logos, from `common.py`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from retlink.core.errors import ConfigError
from retlink.core.paths import cache_dir
from retlink.datasets.build import common
from retlink.datasets.build.common import Backgrounds, BenchmarkWriter, place, plan_samples

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[2] / "data" / "icons"
#: the pinned sets: prefix, npm version, licence, sha512 integrity (read by scripts/icons.sh too)
PINNED = DATA / "sources.txt"
#: the manifest of the default build (seed 0), committed so a rebuild can be checked as identical
COMMITTED_MANIFEST = DATA / "manifest.json"
MAKE_TARGET = "make icons-sources"
KB_SIZE = 224
#: trailing style words dropped from names when the set's metadata declares no suffixes
GENERIC_STYLES = frozenset(["fill", "filled", "outline", "outlined", "solid"])
#: styles that draw the outline (preferred to filled ones when a set has no plain variant)
OUTLINE_STYLES = frozenset(["outline", "outlined", "line", "regular", "thin", "light"])
STOP_WORDS = frozenset(["the", "and", "for", "with", "from", "alt", "new"])
#: Iconify's default icon size when neither the icon nor the set gives one
DEFAULT_SIZE = 16
STYLES = ("ink_on_paper", "sign_on_photo", "light_on_dark", "texture")


def default_sources() -> Path:
    """Where `make icons-sources` leaves the icon sets (one folder per set)."""
    return cache_dir() / "npm" / "iconify"


def pinned_sets() -> dict[str, dict[str, str]]:
    """prefix -> {version, licence, integrity}, from sources.txt."""
    out = {}
    for line in PINNED.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            prefix, ver, licence, integrity = line.split()
            out[prefix] = {"version": ver, "licence": licence, "integrity": integrity}
    return out


# -- reading a set ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drawing:
    """One icon of a set: its SVG body and view box."""

    body: str
    left: float
    top: float
    width: float
    height: float

    def svg(self, colour: tuple[int, int, int]) -> str:
        """The icon as a standalone SVG in one colour (Iconify bodies paint with currentColor)."""
        ink = "#{:02X}{:02X}{:02X}".format(*colour)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{self.left:g} {self.top:g} {self.width:g} {self.height:g}" '
            f'color="{ink}">{self.body.replace("currentColor", ink)}</svg>'
        )


@dataclass
class IconSet:
    """What one Iconify package ships that the build uses."""

    prefix: str
    name: str
    version: str | None
    licence: str | None
    icons: dict[str, Drawing]
    #: plain alias -> its parent icon's name
    aliases: dict[str, str]
    #: icon name -> its category (sets that ship categories)
    categories: dict[str, str] = field(default_factory=dict)
    suffixes: frozenset[str] = GENERIC_STYLES
    sha256: str = ""


def _json(path: Path, required: bool) -> Any:
    """A package file as JSON; a ConfigError naming the file when it is malformed."""
    if not path.is_file():
        if required:
            raise ConfigError(f"{path}: file not found (an Iconify set folder holds icons.json; run `{MAKE_TARGET}`)")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid Iconify JSON ({e})") from None


def _number(value: Any, default: float, path: Path, what: str) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (value <= 0 and what in ("width", "height")):
        raise ConfigError(f"{path}: {what} must be a positive number, got {value!r:.40}")
    return float(value)


def load_set(folder: Path) -> IconSet:
    """One set from its folder (icons.json, and info.json / metadata.json / package.json if there)."""
    path = folder / "icons.json"
    data = _json(path, required=True)
    if not isinstance(data, dict) or not isinstance(data.get("icons"), dict) or not isinstance(data.get("prefix"), str):
        raise ConfigError(f"{path}: not an Iconify icon set (needs an object with 'prefix' and 'icons')")
    width = _number(data.get("width"), DEFAULT_SIZE, path, "width")
    height = _number(data.get("height"), DEFAULT_SIZE, path, "height")
    icons: dict[str, Drawing] = {}
    for name, icon in sorted(data["icons"].items()):
        if not isinstance(icon, dict) or not isinstance(icon.get("body"), str):
            raise ConfigError(f"{path}: icon {name!r:.60} has no 'body' string")
        if icon.get("hidden") or icon.get("rotate") or icon.get("hFlip") or icon.get("vFlip"):
            continue  # hidden: deprecated; transformed: another drawing than its body
        icons[name] = Drawing(
            icon["body"],
            _number(icon.get("left"), 0.0, path, "left"),
            _number(icon.get("top"), 0.0, path, "top"),
            _number(icon.get("width"), width, path, "width"),
            _number(icon.get("height"), height, path, "height"),
        )
    raw_aliases = data.get("aliases") or {}
    if not isinstance(raw_aliases, dict):
        raise ConfigError(f"{path}: 'aliases' must be an object")
    aliases = {
        a: v["parent"]
        for a, v in sorted(raw_aliases.items())
        if isinstance(v, dict) and set(v) == {"parent"} and v["parent"] in icons and a not in icons
    }
    info = _json(folder / "info.json", required=False)
    meta = _json(folder / "metadata.json", required=False)
    package = _json(folder / "package.json", required=False)
    licence = info.get("license", {}).get("spdx") if isinstance(info.get("license"), dict) else None
    categories = {}
    for cat, names in sorted((meta.get("categories") or {}).items()):
        for n in names if isinstance(names, list) else []:
            categories.setdefault(n, cat)
    declared = {w for s in (meta.get("suffixes") or {}) for w in s.split("-") if w and not w.isdigit()}
    return IconSet(
        prefix=data["prefix"],
        name=str(info.get("name") or data["prefix"]),
        version=package.get("version"),
        licence=licence,
        icons=icons,
        aliases=aliases,
        categories=categories,
        suffixes=frozenset(declared) or GENERIC_STYLES,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def load_sets(sources: Path, sets: list[str] | None = None) -> list[IconSet]:
    """The sets under `sources` (every subfolder with an icons.json, or the named ones), by prefix."""
    sources = Path(sources).expanduser()
    pinned = sources.resolve() == default_sources().resolve() and sets is None
    if pinned:
        sets = sorted(pinned_sets())
    found = sorted(p.parent.name for p in sources.glob("*/icons.json")) if sources.is_dir() else []
    wanted = sets if sets is not None else found
    missing = [s for s in wanted if s not in found]
    if not wanted or missing:
        what = f"the icon sets {', '.join(missing)} are" if missing else "no Iconify icon set is"
        raise ConfigError(f"{what} not in {sources}: run `{MAKE_TARGET}` (scripts/icons.sh) to fetch the pinned packages")
    loaded = [load_set(sources / s) for s in sorted(wanted)]
    if pinned:  # the fetched folder must hold the pinned versions (the script replaces any other)
        pins = pinned_sets()
        stale = [f"{name} {s.version}" for name, s in zip(sorted(wanted), loaded, strict=True) if s.version != pins[name]["version"]]
        if stale:
            raise ConfigError(f"{sources} holds other versions than sources.txt pins ({', '.join(stale)}): run `{MAKE_TARGET}`")
    return loaded


# -- names -> concepts -----------------------------------------------------------------------------


def name_words(name: str) -> list[str]:
    """The words of an icon name, lower case (`arrow-up--alt` -> ["arrow", "up", "alt"])."""
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def concept_of(name: str, suffixes: frozenset[str]) -> tuple[str, int] | None:
    """(concept, variant rank) of an icon name: one trailing style word dropped; rank 0 for the
    plain name, 1 for an outline style, 2 for a filled one. None for names with a number."""
    words = name_words(name)
    if not words or any(any(c.isdigit() for c in w) for w in words):
        return None
    rank = 0
    if len(words) > 1 and words[-1] in suffixes:
        rank = 1 if words[-1] in OUTLINE_STYLES else 2
        words = words[:-1]
    return " ".join(words), rank


def concepts_of_set(icon_set: IconSet) -> dict[str, str]:
    """concept -> the name of the icon that draws it in this set (its plain variant)."""
    best: dict[str, tuple[tuple[int, int, str], str]] = {}
    names = [(n, n, 0) for n in icon_set.icons] + [(a, p, 1) for a, p in icon_set.aliases.items()]
    for name, drawn, is_alias in names:
        found = concept_of(name, icon_set.suffixes)
        if found is None:
            continue
        concept, rank = found
        key = (rank, is_alias, name)
        if concept not in best or key < best[concept][0]:
            best[concept] = (key, drawn)
    return {c: v[1] for c, v in sorted(best.items())}


@dataclass(frozen=True)
class Concept:
    """A KB candidate: a concept and its drawing in every set that has it."""

    id: str
    name: str
    #: set prefix -> icon name, sorted by prefix
    drawn_by: dict[str, str]


def candidate_concepts(sets: list[IconSet], min_sets: int = 2) -> list[Concept]:
    """Every concept that `min_sets` or more sets draw, sorted by id."""
    by_concept: dict[str, dict[str, str]] = defaultdict(dict)
    for s in sets:
        for concept, icon in concepts_of_set(s).items():
            by_concept[concept][s.prefix] = icon
    return sorted(
        (Concept(c.replace(" ", "-"), c, dict(sorted(d.items()))) for c, d in by_concept.items() if len(d) >= min_sets),
        key=lambda c: c.id,
    )


def mention_words(name: str) -> list[str]:
    """The words of a concept that can be a mention: letters only, 3+ characters, not a stop word."""
    return [w for w in name.split() if len(w) >= 3 and w.isalpha() and w not in STOP_WORDS]


def mention_groups(concepts: list[Concept]) -> dict[str, list[str]]:
    """Mention word -> ids of every concept whose name has it; only words 2+ concepts share."""
    groups: dict[str, set[str]] = defaultdict(set)
    for c in concepts:
        for w in mention_words(c.name):
            groups[w].add(c.id)
    return {k: sorted(v) for k, v in sorted(groups.items()) if len(v) >= 2}


def kb_set(concept: Concept, seed: int) -> str:
    """The set whose drawing is the KB image: a seeded choice per concept."""
    prefixes = list(concept.drawn_by)
    return prefixes[int(common.rng(seed, f"kb-set:{concept.id}").integers(len(prefixes)))]


# -- metadata -> text ------------------------------------------------------------------------------


def categories(concept: Concept, sets: dict[str, IconSet]) -> list[tuple[str, str]]:
    """(category, set name) for each set that files this concept's icon under a category."""
    return [
        (sets[p].categories[icon], sets[p].name)
        for p, icon in concept.drawn_by.items()
        if icon in sets[p].categories
    ]


def describe(concept: Concept, sets: dict[str, IconSet], kb_prefix: str) -> str:
    """The entity description: only what the packages' metadata says."""
    names = [sets[p].name for p in concept.drawn_by]
    parts = [
        f"{concept.name[0].upper() + concept.name[1:]} is an icon concept (named \"{concept.id}\") "
        f"drawn by {len(names)} icon sets: {', '.join(names)}."
    ]
    cats = categories(concept, sets)
    if cats:
        parts.append("Filed under " + "; ".join(f"{c} ({s})" for c, s in cats) + ".")
    kb = sets[kb_prefix]
    parts.append(f"Its image is the {kb.name} icon \"{concept.drawn_by[kb_prefix]}\"" + (f" ({kb.licence})." if kb.licence else "."))
    return " ".join(parts)


# Sentence templates by the clue they carry; {m} is the mention. None gives the concept away.
TEMPLATES = common.parse_templates(
    """
    | The toolbar shows the {m} icon next to the search box.
    | Tap the {m} button to carry on.
    | The {m} symbol sits in the corner of the app's home screen.
    | The {m} pictogram was printed on the sign by the door.
    | The slide marked the point with the {m} icon.
    | Press the {m} icon in the top bar to open it.
    category | In the {category} section of the menu, the {m} icon stands out.
    category | The designer picked the {m} icon from the {category} group.
    category | Among the {category} symbols on the screen was the {m} icon.
    """
)


def clue_values(concept: Concept, mention: str, sets: dict[str, IconSet]) -> dict[str, str]:
    """The clues a sentence may use: a category, never one holding a name word other than the mention."""
    secret = set(concept.name.split()) - {mention}
    safe = [c for c, _ in categories(concept, sets) if not common.leaks(c, secret)]
    return {"category": safe[0].lower()} if safe else {}


# -- rendering -------------------------------------------------------------------------------------


def render_kb_image(drawing: Drawing, size: int = KB_SIZE) -> Image.Image:
    """The KB ("Wikipedia") image: the drawing near-black, centred on white."""
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    icon = common.svg_image(drawing.svg((24, 24, 24)), int(size * 0.75))
    offset = (size - icon.width) // 2
    canvas.paste(icon, (offset, offset), icon)
    return canvas


def _shade(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(low, high, size=3))  # type: ignore[return-value]


def render_mention_image(drawing: Drawing, rng: np.random.Generator, backgrounds: Backgrounds) -> tuple[Image.Image, str]:
    """The other set's drawing as a screenshot or a photo of it would show it; returns (image, style)."""
    canvas_size = 320
    style = STYLES[int(rng.integers(len(STYLES)))]
    size = int(canvas_size * rng.uniform(0.38, 0.62))
    angle = float(rng.uniform(-8, 8))
    panel = None
    if style == "ink_on_paper":
        canvas = Image.new("RGB", (canvas_size, canvas_size), _shade(rng, 215, 256))
        ink = _shade(rng, 0, 110)
    elif style == "sign_on_photo":
        canvas = backgrounds.crop(backgrounds.photos[int(rng.integers(len(backgrounds.photos)))], canvas_size, rng)
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.5))))
        panel = _shade(rng, 225, 256)
        ink = _shade(rng, 0, 90)
    elif style == "light_on_dark":
        canvas = Image.new("RGB", (canvas_size, canvas_size), _shade(rng, 0, 70))
        ink = _shade(rng, 190, 256)
    else:  # texture
        texture = backgrounds.crop(backgrounds.textures[int(rng.integers(len(backgrounds.textures)))], canvas_size, rng)
        canvas = Image.blend(texture, Image.new("RGB", texture.size, _shade(rng, 0, 256)), float(rng.uniform(0.4, 0.7)))
        dark = float(np.asarray(canvas, dtype=np.float32).mean()) > 128
        ink = _shade(rng, 0, 40) if dark else _shade(rng, 215, 256)
    icon = common.svg_image(drawing.svg(ink), size)
    return place(canvas, icon, rng, size=size, angle=angle, panel=panel), style


# -- the build -------------------------------------------------------------------------------------


def source_view(sets: list[IconSet]) -> dict[str, Any]:
    """What the manifest says about the input: every set's package version, licence and icons.json sha256."""
    return {
        "packages": {
            s.prefix: {"package": f"@iconify-json/{s.prefix}", "version": s.version, "licence": s.licence, "icons_json_sha256": s.sha256}
            for s in sets
        },
        "icons": sum(len(s.icons) for s in sets),
    }


def build(
    out: Path,
    *,
    sources: Path | None = None,
    seed: int = 0,
    samples: int = 1200,
    distractors: int = 100,
    limit: int | None = None,
    nil_share: float = 0.05,
    progress: bool = True,
    console: Any = None,
) -> dict[str, Any]:
    """Build the benchmark into `out` (replaced only when complete) from the icon sets in
    `sources` (default: where `make icons-sources` puts them); returns the manifest."""
    params = common.Params(seed, samples, distractors, limit, nil_share)
    started = time.perf_counter()
    out = common.check_target(out)
    sets = load_sets(sources if sources is not None else default_sources())
    by_prefix = {s.prefix: s for s in sets}
    candidates = candidate_concepts(sets)
    if len(candidates) < 3:
        raise ConfigError(f"only {len(candidates)} concepts are drawn by 2+ of the sets {sorted(by_prefix)}: too few for a benchmark")
    by_id = {c.id: c for c in candidates}
    p = plan_samples(mention_groups(candidates), [c.id for c in candidates], params)
    kb_concepts = [by_id[i] for i in p.kb_ids]
    groups = mention_groups(kb_concepts)
    kb_prefix = {c.id: kb_set(c, seed) for c in candidates}
    log.info("icons: %d sets, %d candidate concepts, %d KB entities", len(sets), len(candidates), len(kb_concepts))

    writer = BenchmarkWriter(out, "ICONS")
    backgrounds = Backgrounds()
    with common.progress_bar(progress, console) as bar:
        task = bar.add_task("KB images", total=len(kb_concepts))
        for c in kb_concepts:
            aliases = [w for w in mention_words(c.name) if w in groups and w != c.name]
            drawing = by_prefix[kb_prefix[c.id]].icons[c.drawn_by[kb_prefix[c.id]]]
            writer.add_entity(c.id, c.name, aliases, describe(c, by_prefix, kb_prefix[c.id]), render_kb_image(drawing))
            bar.advance(task)

        task = bar.add_task("mention images", total=len(p.records))
        for rec in p.records:
            c = by_id[rec["id"]]
            rng = common.rng(seed, rec["key"])
            others = [q for q in c.drawn_by if q != kb_prefix[c.id]]
            prefix = others[int(rng.integers(len(others)))]
            mention = rec["mention_key"]
            text, clues = common.fill_template(TEMPLATES, clue_values(c, mention, by_prefix), mention, rng)
            image, style = render_mention_image(by_prefix[prefix].icons[c.drawn_by[prefix]], rng, backgrounds)
            writer.add_sample(
                rec["split"],
                image,
                int(rng.integers(55, 91)),
                sentence=text,
                mention=mention,
                answer="nil" if c.id in p.nil else c.id,
                entities=c.name,
                # what the sentence and image carry: the clues, the rendering, whose drawing each image is
                extra={"clues": clues, "style": style, "mention_set": prefix, "kb_set": kb_prefix[c.id]},
            )
            bar.advance(task)

    return writer.finish(
        dataset="icons",
        source=source_view(sets),
        versions=common.library_versions(),
        params=params.as_dict(),
        counts={
            "entities": len(kb_concepts),
            "candidate_concepts": len(candidates),
            "mention_words": len(groups),
            **common.plan_counts(p, writer.by_split),
        },
        started=started,
    )
