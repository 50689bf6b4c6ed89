"""WikiDiverse (keys "wikidiverse" and "wikidiverse-mimic"): Wang et al., "WikiDiverse: A
Multimodal Entity Linking Dataset with Diversified Contextual Topics and Entity Types" (ACL 2022),
wangxw5/wikiDiverse: Wikinews image-caption pairs linked to Wikipedia; V2 has 6,312 / 755 / 757
captions and 13,205 / 1,552 / 1,570 mentions in train / valid / test (README statistics).

Key "wikidiverse" reads the published format (README "Data Format"):

- `train.json`, `valid.json`, `test.json`: one JSON array of captions, each
  `[caption, image_url, topic, [[mention, type, start, end, entity_url], ...]]`, e.g.
  `["The Lions versus the Packers (2007).", "https://upload.wikimedia.org/.../DetroitLionsRunningPlay-2007.jpg",
  "sports", [["Lions", "Organization", 4, 9, "https://en.wikipedia.org/wiki/Detroit_Lions"], ...]]`;
  every mention becomes one Sample, its gold id the Wikipedia title of `entity_url`
  ("Detroit_Lions"), or NIL when the URL is empty or not a Wikipedia article;
- `wikinews_imgs/`: the released Wikinews images, named by the README's rule: the MD5 hex digest
  of the URL's file name plus the file's extension, `.svg` saved as `.png`;
- `entity2desc.txt`: the KB, one entity per line, `title-or-URL@@@@description` ("split with
  '@@@@'" in the README);
- `entity2imgs.txt` (optional): `title-or-URL@@@@image_url[@@@@image_url...]`, images stored in
  `wikipedia_imgs/` under the same MD5 naming rule.
The split and KB file names are this loader's convention (the archives on Google Drive name them;
the repository does not): rename the downloaded files to match.

Key "wikidiverse-mimic" reads the cleaned MIMIC release (`wiki_diverse_{train,dev,test}.json`,
`kb_entity.json` with `num_entity: 132460` in MIMIC's config), see `mimic_format`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote

from retlink.core.types import NIL, Entity
from retlink.datasets.base import (
    MELDataset,
    Sample,
    check_image,
    iter_json_array,
    located,
    register,
    require,
)
from retlink.datasets.mimic_format import MimicFormatDataset

log = logging.getLogger(__name__)

SEPARATOR = "@@@@"


def image_file_name(url: str) -> str:
    """Local file name of a released WikiDiverse image: md5(basename) + extension, svg -> png."""
    base = url.rsplit("/", 1)[-1]
    suffix = Path(base).suffix
    if suffix.lower() == ".svg":
        suffix = ".png"
    return hashlib.md5(base.encode()).hexdigest() + suffix


def title_of(ref: str) -> str:
    """Wikipedia title (underscored, unquoted) of an article URL or a plain title; "" if neither."""
    ref = ref.strip()
    if ref.startswith(("http://", "https://")):
        if "/wiki/" not in ref:
            return ""
        ref = ref.split("/wiki/", 1)[1]
    return unquote(ref).replace(" ", "_").strip("_")


@register
class WikiDiverse(MELDataset):
    """WikiDiverse in its own published (passage-level) format."""

    key = "wikidiverse"
    splits: ClassVar[tuple[str, ...]] = ("train", "valid", "test")

    def _samples(self, split: str) -> Iterator[Sample]:
        path = self.root / f"{split}.json"
        images = self.root / "wikinews_imgs"
        for index, (line, rec) in enumerate(iter_json_array(path)):
            caption = require(rec, 0, str, path, line, what="caption record")
            url = require(rec, 1, str, path, line, what="caption record")
            require(rec, 2, str, path, line, what="caption record")
            mentions = require(rec, 3, list, path, line, what="caption record")
            image = (
                check_image(images / image_file_name(url), path, line, strict=self.strict_images)
                if url
                else None
            )
            for j, m in enumerate(mentions):
                what = f"mention {j}"
                text = require(m, 0, str, path, line, what=what)
                require(m, 1, str, path, line, what=what)
                start = require(m, 2, int, path, line, what=what)
                end = require(m, 3, int, path, line, what=what)
                entity_url = require(m, 4, str, path, line, what=what)
                if not 0 <= start < end <= len(caption):
                    raise located(path, line, f"{what} offsets [{start}, {end}) lie outside the caption")
                if caption[start:end] != text:
                    log.debug(
                        "%s:%d: %s text %r differs from caption[%d:%d]", path, line, what, text, start, end
                    )
                if not text.strip():
                    raise located(path, line, f"{what} is empty")
                yield Sample(
                    id=f"{self.key}:{split}:{index}-{j}",
                    image_path=image.resolve() if image else None,
                    mention=text.strip(),
                    context=caption,
                    gold_id=title_of(entity_url) or NIL,
                    split=split,
                    dataset=self.key,
                    source=f"{path}:{line}",
                )

    def _entity_images(self) -> dict[str, list[str]]:
        """title -> image URLs from entity2imgs.txt (absent file: no images). Small: one line per
        entity with images, needed as a lookup while entity2desc streams."""
        path = self.root / "entity2imgs.txt"
        out: dict[str, list[str]] = {}
        if not path.is_file():
            return out
        for line, fields in _separated_lines(path):
            title = title_of(fields[0])
            if not title or len(fields) < 2 or not all(fields[1:]):
                raise located(path, line, f"expected 'title{SEPARATOR}image_url[{SEPARATOR}...]'")
            out.setdefault(title, []).extend(fields[1:])
        return out

    def entities(self) -> Iterator[Entity]:
        path = self.root / "entity2desc.txt"
        images_by_title = self._entity_images()
        folder = self.root / "wikipedia_imgs"
        for line, fields in _separated_lines(path):
            if len(fields) != 2:
                raise located(
                    path, line, f"expected 'title{SEPARATOR}description' (2 fields), got {len(fields)}"
                )
            title = title_of(fields[0])
            if not title:
                raise located(path, line, f"not a Wikipedia title or article URL: {fields[0]!r:.80}")
            paths = []
            for url in images_by_title.get(title, []):
                found = check_image(folder / image_file_name(url), path, line, strict=self.strict_images)
                if found:
                    paths.append(str(found.resolve()))
            yield self.entity(
                {
                    "id": title,
                    "name": title.replace("_", " "),
                    "description": fields[1].strip(),
                    "image_paths": paths,
                },
                path,
                line,
            )


def _separated_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    if not path.is_file():
        raise located(path, None, "file not found")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise located(path, lineno, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if text.strip():
                yield lineno, text.split(SEPARATOR)


@register
class WikiDiverseMimic(MimicFormatDataset):
    """WikiDiverse as cleaned and released by MIMIC (same layout as WikiMEL)."""

    key = "wikidiverse-mimic"
    split_files: ClassVar[dict[str, str]] = {
        "train": "wiki_diverse_train.json",
        "dev": "wiki_diverse_dev.json",
        "test": "wiki_diverse_test.json",
    }
