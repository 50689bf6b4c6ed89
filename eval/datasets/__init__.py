"""MEL dataset loaders, one per file, behind one registry: `load_dataset("wikimel", root)`.

Every loader yields `Sample`s and `retlink.types.Entity`s; see `base.py` for the contract.
"""

from retlink.eval.datasets import demo, logos, m3el, richpediamel, wikidiverse, wikimel, wikiperson  # noqa: F401  (register)
from retlink.eval.datasets.base import DATASETS, MELDataset, Sample, available, load_dataset, register

__all__ = ["DATASETS", "MELDataset", "Sample", "available", "load_dataset", "register"]
