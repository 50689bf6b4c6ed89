"""Regression tests of issue 15: hostile input gets a typed error (exit 2), never a traceback.

Each test here failed before its fix: the decompression bomb past PIL's own limit, unbounded
mention and context lengths, a whitespace-only entity name, and JSONL errors that named the
JSON document's line instead of the file's.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from retlink.agent.nodes.validator import validate
from retlink.cli import app
from retlink.core.errors import DatasetError, ImageTooLargeError, TextTooLongError
from retlink.core.schema import LimitsConfig
from retlink.core.types import Entity
from retlink.tools.images import load_image
from retlink.tools.kb.build import read_entities
from tests.hostile.common import bomb_png

runner = CliRunner()


@pytest.mark.parametrize("side", [30_000, 10_000])
def test_decompression_bomb_is_too_large_whatever_pil_thinks(tmp_path, side):
    # 30000^2 is past PIL's own limit (Image.open raised DecompressionBombError); 10000^2 is not
    data = bomb_png(side, side)
    with pytest.raises(ImageTooLargeError, match="pixels"):
        load_image(data)
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(ImageTooLargeError, match="pixels"):
        load_image(path)
    if side == 30_000:  # a caller who raises max_pixels past PIL's limit gets the typed error too
        with pytest.raises(ImageTooLargeError, match="pixels"):
            load_image(data, max_pixels=10**12)


def test_cli_link_refuses_a_bomb_with_exit_2(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    res = runner.invoke(app, ["link", str(path), "--mention", "x"])
    assert res.exit_code == 2, res.output
    assert "pixels" in res.stderr and "Traceback" not in res.output + res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mention", "x" * 257], "mention is 257 characters, over the limit of 256 (limits.max_mention_chars)"),
        (["--mention", "x", "--context", "y" * 8193], "context is 8,193 characters, over the limit of 8,192"),
    ],
)
def test_cli_link_bounds_text_before_loading_models(demo_dir, args, message):
    res = runner.invoke(app, ["link", str(demo_dir / "images" / "coffee.jpg"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.stderr and "Traceback" not in res.output + res.stderr


def test_validate_node_bounds_text(demo_dir):
    """The graph's first node: what `Linker.link` / `alink` / the endpoint all pass through."""
    limits = LimitsConfig(max_mention_chars=10, max_context_chars=20)
    image = demo_dir / "images" / "coffee.jpg"
    with pytest.raises(TextTooLongError, match=r"limits\.max_mention_chars"):
        validate({"image": image, "mention": "m" * 11}, limits=limits)
    with pytest.raises(TextTooLongError, match=r"limits\.max_context_chars"):
        validate({"image": image, "mention": "m", "context": "c" * 21}, limits=limits)
    # surrounding whitespace does not count against the limit
    out = validate({"image": image, "mention": f"  {'m' * 10}  ", "context": "c" * 20}, limits=limits)
    assert out["mention"] == "m" * 10


def test_limits_must_be_positive():
    with pytest.raises(ValidationError):
        LimitsConfig(max_mention_chars=0)


@pytest.mark.parametrize("field", ["id", "name"])
def test_whitespace_only_entity_id_or_name_is_refused(field):
    with pytest.raises(ValidationError, match="blank"):
        Entity(**{"id": "a", "name": "A", field: "   "})


def test_jsonl_errors_name_the_file_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"id": "a", "name": "A"}\n\n{"id": "b", "name":\n')
    with pytest.raises(DatasetError) as err:
        list(read_entities(path))
    assert f"{path}:3:" in str(err.value) and "line 2" not in str(err.value)
    path.write_text('{"id": "a", "name": "A"}\n{"id": "b", "name": "  "}\n')
    with pytest.raises(DatasetError, match=r"e\.jsonl:2: invalid entity \(name: .*blank"):
        list(read_entities(path))


def test_docs_list_every_limit_with_its_default():
    """The limits table of the Python usage page (docs/python.md, "Bad input") names every limit
    with its current default."""
    import re

    from tests.conftest import REPO

    rows = dict(re.findall(r"^\| `limits\.(\w+)` \| ([^|]+) \|", (REPO / "docs" / "python.md").read_text(), re.M))
    defaults = LimitsConfig().model_dump()
    assert set(rows) == set(defaults)
    for key, value in defaults.items():
        numbers = [int(n.replace(",", "")) for n in re.findall(r"[\d,]+", rows[key]) if n.strip(",")]
        assert value in numbers, (key, rows[key])
