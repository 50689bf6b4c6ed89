"""The textual modality of a MATE scene in four formats: JSON, YAML, XML and verbalised sentences.

MATE (Alonso et al., ACL 2025, arXiv 2503.03854) ablates how the scene's text is written; the
information is the same in each: per object its name, 3D coordinates, rotation, size and
material (the attributes the text holds, see `retlink.mate.scene`). `write` turns those records
into a format, `read` parses any format back into the same records (typed: coordinates a list of
floats, rotation an int, size a float), so a solver that reads the text (the binding agent)
reads every format, and `convert` rewrites a set's stored JSON (`scenes/NNNNN.json`) into another
format at run time: a set is built once and every format is derived from it.

Numbers are written as Python's shortest round-tripping repr in every format, so
`read(write(records, f), f) == records` exactly.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any, Literal, get_args

import yaml

from retlink.core.errors import RetlinkError

TextFormat = Literal["json", "yaml", "xml", "sentences"]
FORMATS: tuple[str, ...] = get_args(TextFormat)
#: how the prompts call the scene text of each format ("the JSON below", "in the YAML", ...)
NOUN = {"json": "JSON", "yaml": "YAML", "xml": "XML", "sentences": "text"}
#: the attributes a text record holds, in their written order, with the type `read` restores
FIELDS: dict[str, type] = {"name": str, "3d_coords": list, "rotation": int, "size": float, "material": str}


class SceneTextError(RetlinkError):
    """A scene text that is not what its format says (a typed error for a solver to record)."""


def _number(value: float | int) -> str:
    return json.dumps(value)


def _coords(values: list[float]) -> str:
    return "[" + ", ".join(_number(v) for v in values) + "]"


def _typed(record: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A parsed record with the fields' types (XML and sentences parse text; YAML and JSON keep
    numbers as written), in `FIELDS` order; a SceneTextError naming what is wrong."""
    missing = [k for k in FIELDS if k not in record]
    if missing:
        raise SceneTextError(f"a {fmt} scene object lacks {', '.join(missing)}: {record!r}")
    try:
        coords = record["3d_coords"]
        if isinstance(coords, str):
            coords = json.loads(coords)
        return {
            "name": str(record["name"]),
            "3d_coords": [float(v) for v in coords],
            "rotation": int(record["rotation"]),
            "size": float(record["size"]),
            "material": str(record["material"]),
        }
    except (TypeError, ValueError) as e:
        raise SceneTextError(f"a {fmt} scene object has a malformed value ({e}): {record!r}") from None


# -- writers ------------------------------------------------------------------------------------


def _write_json(records: list[dict[str, Any]]) -> str:
    rows = ",\n".join("    " + json.dumps(r) for r in records)
    return '{\n  "objects": [\n' + rows + "\n  ]\n}"


def _write_yaml(records: list[dict[str, Any]]) -> str:
    return yaml.safe_dump({"objects": records}, sort_keys=False, default_flow_style=None).strip()


def _write_xml(records: list[dict[str, Any]]) -> str:
    # the coordinates' key starts with a digit, which no XML tag may: the element is <coords>
    lines = ["<scene>"]
    for r in records:
        name = ET.Element("name")
        name.text = r["name"]
        lines += [
            "  <object>",
            f"    {ET.tostring(name, encoding='unicode')}",
            f"    <coords>{_coords(r['3d_coords'])}</coords>",
            f"    <rotation>{_number(r['rotation'])}</rotation>",
            f"    <size>{_number(r['size'])}</size>",
            f"    <material>{r['material']}</material>",
            "  </object>",
        ]
    return "\n".join([*lines, "</scene>"])


_SENTENCE = re.compile(
    r"^(?P<name>\S+) is a (?P<material>\w+) object at the 3D coordinates (?P<coords>\[[^\]]*\]), "
    r"rotated by (?P<rotation>-?\d+) degrees, with a size of (?P<size>-?\d+(?:\.\d+)?(?:e-?\d+)?)\.$"
)


def _write_sentences(records: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{r['name']} is a {r['material']} object at the 3D coordinates {_coords(r['3d_coords'])}, "
        f"rotated by {_number(r['rotation'])} degrees, with a size of {_number(r['size'])}."
        for r in records
    )


# -- readers ------------------------------------------------------------------------------------


def _read_json(text: str) -> list[dict[str, Any]]:
    try:
        return json.loads(text)["objects"]
    except (ValueError, KeyError, TypeError) as e:
        raise SceneTextError(f"the scene text is not MATE's JSON: {e}") from None


def _read_yaml(text: str) -> list[dict[str, Any]]:
    try:
        return yaml.safe_load(text)["objects"]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise SceneTextError(f"the scene text is not MATE's YAML: {e}") from None


def _read_xml(text: str) -> list[dict[str, Any]]:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:  # MATE's XML has no DTD and no entities: a text with them is refused, not expanded
        root = fromstring(text, forbid_dtd=True)
    except ET.ParseError as e:
        raise SceneTextError(f"the scene text is not MATE's XML: {e}") from None
    except DefusedXmlException as e:
        raise SceneTextError(f"the scene text is not MATE's XML (it declares a DTD or entities): {e!r}") from None
    tags = {"name": "name", "coords": "3d_coords", "rotation": "rotation", "size": "size", "material": "material"}
    return [{tags[c.tag]: (c.text or "").strip() for c in obj if c.tag in tags} for obj in root.iter("object")]


def _read_sentences(text: str) -> list[dict[str, Any]]:
    out = []
    for line in filter(None, (x.strip() for x in text.splitlines())):
        m = _SENTENCE.match(line)
        if m is None:
            raise SceneTextError(f"not a sentence of MATE's verbalised scene text: {line!r}")
        fields = m.groupdict()
        fields["3d_coords"] = fields.pop("coords")
        out.append(fields)
    return out


_WRITERS = {"json": _write_json, "yaml": _write_yaml, "xml": _write_xml, "sentences": _write_sentences}
_READERS = {"json": _read_json, "yaml": _read_yaml, "xml": _read_xml, "sentences": _read_sentences}


def _check(fmt: str) -> None:
    if fmt not in _WRITERS:
        raise SceneTextError(f"unknown scene text format {fmt!r}; known: {', '.join(FORMATS)}")


def write(records: list[dict[str, Any]], fmt: str = "json") -> str:
    """The scene text of these object records (`SceneObject.text_record`) in format `fmt`."""
    _check(fmt)
    return _WRITERS[fmt](records)


def read(text: str, fmt: str = "json") -> list[dict[str, Any]]:
    """The object records of a scene text in format `fmt` (the inverse of `write`)."""
    _check(fmt)
    records = _READERS[fmt](text)
    if not isinstance(records, list):
        raise SceneTextError(f"the {fmt} scene text holds no list of objects")
    return [_typed(r if isinstance(r, dict) else {}, fmt) for r in records]


def convert(text: str, fmt: str, source: str = "json") -> str:
    """`text` (format `source`, a set's stored JSON by default) rewritten in format `fmt`."""
    return text if fmt == source else write(read(text, source), fmt)
