"""The alias table's lookup: which entities a common name keeps is the same everywhere."""

from __future__ import annotations

import random

from retlink.core.types import Entity
from retlink.tools.kb.chroma import AliasTable


def test_a_common_name_keeps_the_first_ids_in_order_whatever_the_insertion_order(tmp_path):
    ids = [f"apache_{i:03d}" for i in range(120)]
    for seed in (0, 1):
        shuffled = random.Random(seed).sample(ids, len(ids))
        table = AliasTable(tmp_path / f"aliases-{seed}.sqlite")
        for i in range(0, len(shuffled), 7):  # added in several batches, as a resumed build does
            table.add(Entity(id=e, name=f"Apache {e}", aliases=["Apache"]) for e in shuffled[i : i + 7])
        assert table.lookup("apache", limit=50) == ids[:50]
        assert table.lookup("APACHE ", limit=500) == ids
        assert table.lookup("", limit=5) == [] and table.lookup("nobody", limit=5) == []
        table.close()
