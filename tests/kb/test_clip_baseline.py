"""The CLIP-style baseline on the demo KB with the real embedded models (MiniLM, EfficientNet-Lite0)."""

from __future__ import annotations

import pytest

from retlink.agent.nodes.retriever import mention_text
from retlink.core.errors import EmptyMentionError
from retlink.datasets import load_dataset
from retlink.eval.baseline import BaselineConfig, CLIPBaseline, fuse
from retlink.tools.kb.build import build_kb
from retlink.tools.kb.store import KBStore


@pytest.fixture(scope="module")
def demo_kb(tmp_path_factory, text_embedder, image_embedder):
    out = tmp_path_factory.mktemp("baseline") / "kb"
    build_kb(load_dataset("demo").entities(), out, text_embedder, image_embedder, progress=False)
    return KBStore(out, text_embedder, image_embedder)


def hits(linker: CLIPBaseline, with_context: bool) -> int:
    return sum(
        linker.link(s.image_path, s.mention, s.context if with_context else "").entity_id == s.gold_id
        for s in load_dataset("demo").samples()
    )


def test_gold_entity_ranks_first_on_most_demo_examples(demo_kb):
    result_hits = hits(CLIPBaseline(demo_kb), with_context=True)
    assert result_hits >= 10  # of 12


def test_image_side_disambiguates_bare_mentions(demo_kb):
    """With the mention alone ("Chelsea", "Falcon", "Java"), text cannot decide; the image can."""
    text_only = hits(CLIPBaseline(demo_kb, BaselineConfig(text_weight=1, image_weight=0)), with_context=False)
    fused = hits(CLIPBaseline(demo_kb), with_context=False)
    assert fused >= 10 and fused >= text_only + 3


def test_link_result_shape(demo_kb):
    sample = next(iter(load_dataset("demo").samples()))
    result = CLIPBaseline(demo_kb, BaselineConfig(top_k=4)).link(
        sample.image_path, sample.mention, sample.context
    )
    assert result.decided_by == "fallback" and result.entity is not None
    assert len(result.candidates) == 4
    assert [c.score for c in result.candidates] == sorted((c.score for c in result.candidates), reverse=True)
    # the answer is the demo's gold (Chelsea the cat), and each score is the weighted mean of the
    # two similarities with the configured weights, worked out here (not by `fuse`)
    assert result.entity.id == sample.gold_id and result.score == pytest.approx(result.candidates[0].score)
    w_text, w_image = BaselineConfig().text_weight, BaselineConfig().image_weight
    for c in result.candidates:
        if c.image_score is None:  # an entity without an image: its text similarity alone
            expected = c.text_score
        else:
            expected = (w_text * c.text_score + w_image * c.image_score) / (w_text + w_image)
        assert c.score == pytest.approx(expected, abs=1e-4), c
    assert result.candidates[0].image_score is not None and [t.node for t in result.trace] == [
        "baseline.embed",
        "baseline.rank",
    ]
    no_image = CLIPBaseline(demo_kb).link(None, sample.mention, sample.context)
    assert all(c.image_score is None for c in no_image.candidates) and no_image.trace[0].skipped
    with pytest.raises(EmptyMentionError):
        CLIPBaseline(demo_kb).link(None, "  ")
    image_only = CLIPBaseline(demo_kb).link(sample.image_path, "", "")  # I2T: the image alone
    assert image_only.candidates and all(c.text_score == 0 for c in image_only.candidates)
    assert [c.score for c in image_only.candidates] == [c.image_score for c in image_only.candidates]


def test_fusion_and_mention_text():
    cfg = BaselineConfig(text_weight=3, image_weight=1)
    assert fuse(0.4, 0.8, cfg) == pytest.approx(0.5)
    assert fuse(0.4, None, cfg) == 0.4  # no image: text alone, not a penalty
    assert mention_text("Java", "A cup of [Java].") == "A cup of [Java]."
    assert mention_text("Java", "") == mention_text("Java", "Java") == "Java"  # as the agent's validator fills it
    assert mention_text("", "") == ""
