"""MEL dataset loaders, one per file, behind one registry: `load_dataset("wikimel", root)`.

Every loader yields `Sample`s and `retlink.core.types.Entity`s; see `base.py` for the contract.
"""

from retlink.datasets import demo, icons, logos, m3el, richpediamel, wikidiverse, wikimel, wikiperson  # noqa: F401  (register)
from retlink.datasets.base import DATASETS, MELDataset, Sample, available, load_dataset, register

__all__ = ["DATASETS", "MELDataset", "Sample", "available", "load_dataset", "register"]
