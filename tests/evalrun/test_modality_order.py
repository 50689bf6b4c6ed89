"""The modality-order permutation (`reasoner.modality_order`): the reasoner's prompt states the
image description before the sentence, and nothing else in the prompt changes."""

from __future__ import annotations

import pytest

from retlink.agent.config import RetlinkConfig
from retlink.agent.prompts import reasoner_messages
from retlink.core.errors import ConfigError
from retlink.core.types import Candidate, Caption, Entity
from retlink.eval.config import load_eval_config


def _prompt(image_first: bool) -> list[str]:
    cands = [Candidate(entity=Entity(id="java_island", name="Java", description="An island."), score=0.6)]
    caption = Caption(text="", labels=[("espresso", 0.8)])
    msgs = reasoner_messages("Java", "A cup of [Java].", caption, cands, [], image_first=image_first)
    return msgs[-1]["content"].splitlines()


def test_image_first_swaps_only_the_order_of_the_two_modalities():
    text_first, image_first = _prompt(False), _prompt(True)
    assert text_first[0].startswith("Sentence:") and text_first[2].startswith("Image shows")
    assert image_first[0].startswith("Image shows") and image_first[1].startswith("Sentence:")
    assert sorted(text_first) == sorted(image_first) and text_first != image_first


def test_modality_order_is_validated_in_agent_and_eval_configs(tmp_path):
    assert RetlinkConfig().reasoner.modality_order == "text_first"
    assert RetlinkConfig.model_validate({"reasoner": {"modality_order": "image_first"}}).reasoner.modality_order == "image_first"
    with pytest.raises(ValueError):
        RetlinkConfig.model_validate({"reasoner": {"modality_order": "sideways"}})
    from evalrun_helpers import small_config

    cfg = small_config(tmp_path / "kb", tmp_path / "runs")
    cfg["pipelines"][1]["overrides"]["reasoner"]["modality_order"] = "sideways"
    with pytest.raises(ConfigError, match=r"pipelines\[1\]\.overrides\.reasoner\.modality_order"):
        load_eval_config(cfg)
