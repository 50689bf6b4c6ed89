"""RichpediaMEL (key "richpediamel"): Richpedia-MEL of Wang et al. (ACM MM 2021), released at
seukgcode/MELBench: 17,806 samples whose mentions come from Richpedia, a multimodal knowledge
graph, and whose entities are Wikidata items; split 70/10/20 into train/dev/test.

The loader reads the cleaned release of pengfei-luo/MIMIC (KDD 2023): `RichpediaMEL_{train,dev,
test}.json`, `kb_entity.json` (MIMIC's config gives `num_entity: 160933`), `qid2id.json`,
`mention_image/` and `kb_image/`; the format is described in
`retlink.datasets.mimic_format`. Example (MELBench README): "Washington resigned his
commission after the Treaty of Paris in 1783." with "Washington" -> "George Washington".
"""

from __future__ import annotations

from typing import ClassVar

from retlink.datasets.base import register
from retlink.datasets.mimic_format import MimicFormatDataset


@register
class RichpediaMEL(MimicFormatDataset):
    """RichpediaMEL in the MIMIC release layout."""

    key = "richpediamel"
    split_files: ClassVar[dict[str, str]] = {
        "train": "RichpediaMEL_train.json",
        "dev": "RichpediaMEL_dev.json",
        "test": "RichpediaMEL_test.json",
    }
