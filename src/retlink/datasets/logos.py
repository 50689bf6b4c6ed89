"""The logos benchmark (key "logos"): brand logos from simple-icons-pack, built by `retlink data build logos`.

A development MEL benchmark that nobody on the project hand-wrote (see `build/logos.py` for the
construction): mentions are title words that several brands share ("Google", "Apache"), so the
alias table cannot decide; the image is another rendering of the logo than the KB's. It is
generated at build time into `$RETLINK_CACHE/data/logos` (the default root); the loader is the
built benchmarks' one (`built.py`: MIMIC's WikiMEL layout, the KB from `entities.jsonl`).
"""

from __future__ import annotations

from retlink.datasets.base import register
from retlink.datasets.built import BuiltBenchmark


@register
class Logos(BuiltBenchmark):
    """The built logos benchmark (MIMIC WikiMEL layout + entities.jsonl)."""

    key = "logos"
