"""The icons benchmark (key "icons"): Iconify icon sets, built by `retlink data build icons`.

A second development MEL benchmark from another source than logos (see `build/icons.py` for the
construction): a concept ("bell", "camera") is drawn by several icon sets, the mention is a word
that several concepts share ("bell" in "bell off", "bell ringing"), and the mention image is the
concept drawn by another set than the KB image: different hands, not another rendering of one
file. Built into `$RETLINK_CACHE/data/icons` (the default root) from the icon sets that
`make icons-sources` fetches; the loader is the built benchmarks' one (`built.py`).
"""

from __future__ import annotations

from retlink.datasets.base import register
from retlink.datasets.built import BuiltBenchmark


@register
class Icons(BuiltBenchmark):
    """The built icons benchmark (MIMIC WikiMEL layout + entities.jsonl)."""

    key = "icons"
