"""WikiMEL (key "wikimel"): Wikidata-MEL of Wang et al., "Multimodal Entity Linking: A New Dataset
and A Baseline" (ACM MM 2021), released at seukgcode/MELBench as "Wikidata-MEL": 18,880 samples
from Wikipedia image captions, split 70/10/20 into train/dev/test, linked to Wikidata.

The loader reads the cleaned release of pengfei-luo/MIMIC (KDD 2023), which most later MEL papers
use: `WIKIMEL_{train,dev,test}.json`, `kb_entity.json` (MIMIC's config gives `num_entity: 109976`,
the ~110k KB of the benchmark), `qid2id.json`, `mention_image/` and `kb_image/`. The format is
described in `retlink.datasets.mimic_format`. Example mention (from the MELBench README):
"Seattle Mayor Charles L. Smith (left) with Will Rogers, circa 1935." with the pairs
"Charles L. Smith" -> "Charles L. Smith (Seattle politician)" and "Will Rogers" -> "Will Rogers".
"""

from __future__ import annotations

from typing import ClassVar

from retlink.datasets.base import register
from retlink.datasets.mimic_format import MimicFormatDataset


@register
class WikiMEL(MimicFormatDataset):
    """WikiMEL in the MIMIC release layout."""

    key = "wikimel"
    split_files: ClassVar[dict[str, str]] = {
        "train": "WIKIMEL_train.json",
        "dev": "WIKIMEL_dev.json",
        "test": "WIKIMEL_test.json",
    }
