"""A local search corpus for the logos benchmark, from Debian's package index.

Why this source: the agent's search rung needs text about the brands that the KB does not
already hold, and nothing may download at run time. Many Simple Icons brands are software
projects and vendors, and Debian's package index (what `apt-cache dumpavail` prints from the
lists `apt-get update` fetched) describes the packages that are, or that name, them: "kafkacat:
generic command line non-JVM Apache Kafka producer and consumer". It is text written by other
people for another purpose, so it can help or mislead like a web page does. The index carries
the one-line descriptions only (the long ones are in translation files this machine does not
fetch), plus each package's homepage, section and debtags.

Construction (deterministic for one index): a package is about a KB entity when its name is the
entity's id (the Simple Icons slug) or its description contains the entity's name as a whole
word sequence (case-insensitive). Each entity keeps at most `per_entity` packages, its own slug
first, then the shortest package names (a project's main package tends to have the shortest
name: `lxc` before `lua-lxc`). A package named by several entities becomes one document. Written
as the JSONL `LocalCorpusSearch` reads (`url`, `title`, `text`), beside a manifest with the
index's sha256, so a rebuild from the same index is checked identical.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retlink.core.errors import ConfigError, DatasetError
from retlink.datasets.base import iter_jsonl, located
from retlink.tools.atomic import write_json_atomic

CORPUS = "corpus.jsonl"
CORPUS_MANIFEST = "corpus.manifest.json"
PACKAGE_URL = "https://packages.debian.org/{name}"
#: words of a name or description: letters and digits, with the joiners brand names use inside
_WORD = re.compile(r"[a-z0-9][a-z0-9.+&']*[a-z0-9+]|[a-z0-9]")
#: names this short match too much by accident ("Go", "R", "C")
MIN_NAME_CHARS = 3


def parse_packages(text: str) -> Iterator[dict[str, str]]:
    """The stanzas of a Debian Packages file: one dict per package (continuation lines joined)."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t"):
                if key is not None:
                    fields[key] += " " + line.strip()
                continue
            name, sep, value = line.partition(":")
            if sep:
                key = name.strip()
                fields[key] = value.strip()
        if fields.get("Package") and fields.get("Description"):
            yield fields


def read_index(path: Path | None) -> str:
    """The package index: a Packages-format file, or (no path) what `apt-cache dumpavail` prints."""
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"package index not found: {path}")
        return path.read_text(encoding="utf-8", errors="replace")
    if shutil.which("apt-cache") is None:
        raise ConfigError(
            "apt-cache not found: the logos corpus reads Debian's package index; pass --packages FILE "
            "(a Debian Packages file) on another system"
        )
    done = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, errors="replace", check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise ConfigError(
            f"apt-cache dumpavail gave no package index (exit {done.returncode}); run `apt-get update` first "
            f"or pass --packages FILE. {done.stderr.strip()[:200]}"
        )
    return done.stdout


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _entities(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DatasetError(f"{path} not found: build the benchmark first (retlink data build logos)")
    rows = []
    for lineno, row in iter_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("name"), str):
            raise located(path, lineno, "an entity needs string id and name")
        rows.append(row)
    return rows


def match_packages(entities: list[dict[str, Any]], packages: list[dict[str, str]], per_entity: int) -> dict[str, list[str]]:
    """Entity id -> the names of the packages about it (at most `per_entity`, best first)."""
    by_first: dict[str, list[tuple[tuple[str, ...], str]]] = defaultdict(list)
    for e in entities:
        words = tuple(_words(e["name"]))
        if words and len("".join(words)) >= MIN_NAME_CHARS:
            by_first[words[0]].append((words, e["id"]))
    found: dict[str, set[str]] = defaultdict(set)
    names = {p["Package"] for p in packages}
    for e in entities:
        if e["id"] in names:
            found[e["id"]].add(e["id"])
    for p in packages:
        words = _words(p["Description"])
        for i, w in enumerate(words):
            for seq, eid in by_first.get(w, ()):
                if tuple(words[i : i + len(seq)]) == seq:
                    found[eid].add(p["Package"])
    return {
        eid: sorted(pkgs, key=lambda n: (n != eid, len(n), n))[:per_entity]
        for eid, pkgs in sorted(found.items())
    }


def document(p: dict[str, str]) -> dict[str, str]:
    """One package as a corpus page: what packages.debian.org shows of it, in the index's words."""
    name, desc = p["Package"], p["Description"]
    parts = [f"{name}: {desc}."]
    if p.get("Section"):
        parts.append(f"Debian section: {p['Section']}.")
    if p.get("Homepage"):
        parts.append(f"Homepage: {p['Homepage']}.")
    if p.get("Tag"):
        parts.append(f"Tags: {p['Tag']}.")
    return {"url": PACKAGE_URL.format(name=name), "title": f"{name} - {desc}", "text": " ".join(parts)}


def build_corpus(data_dir: Path, index_text: str, *, per_entity: int = 3) -> dict[str, Any]:
    """Write `corpus.jsonl` and its manifest into the built benchmark folder `data_dir`."""
    if per_entity < 1:
        raise ConfigError("per_entity must be at least 1")
    entities = _entities(data_dir / "entities.jsonl")
    packages = list(parse_packages(index_text))
    if not packages:
        raise ConfigError("the package index holds no package with a description")
    chosen = match_packages(entities, packages, per_entity)
    by_name = {p["Package"]: p for p in packages}
    names = sorted({n for pkgs in chosen.values() for n in pkgs})
    lines = [json.dumps(document(by_name[n]), ensure_ascii=False, sort_keys=True) for n in names]
    body = "\n".join(lines) + "\n" if lines else ""
    tmp = data_dir / (CORPUS + ".partial")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(data_dir / CORPUS)
    manifest = {
        "source": "Debian package index (apt-cache dumpavail or a Packages file)",
        "index_sha256": hashlib.sha256(index_text.encode("utf-8")).hexdigest(),
        "index_packages": len(packages),
        "per_entity": per_entity,
        "entities": len(entities),
        "entities_with_documents": len(chosen),
        "documents": len(lines),
        "corpus_sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(),
    }
    write_json_atomic(data_dir / CORPUS_MANIFEST, manifest)
    return manifest
