"""`enhancer.condense: extract` (issue 20): a candidate's matching evidence becomes its description
without an LLM call, by the real MiniLM embedder; a whole link traces it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from retlink.agent.nodes.enhancer import enhance, evidence_sentences, extract_description
from retlink.core.schema import EnhancerConfig
from retlink.core.types import Candidate, Entity, Evidence
from retlink.tools.lru import LRU


class FailingLLM:
    """An injected fault: any LLM call in extract mode is a defect, so this one raises."""

    name = "must-not-be-called"

    def generate_batch(self, *a, **kw):
        raise AssertionError("extract mode called the LLM")

    generate = generate_batch


@pytest.fixture(scope="module")
def embedder():
    from retlink.tools.kb.embedders import shared_text_embedder

    return shared_text_embedder()


SEINE = Candidate(entity=Entity(id="seine", name="Seine", description="River flowing through Paris."), score=0.8)
LOIRE = Candidate(entity=Entity(id="loire", name="Loire", description="Longest river in France."), score=0.6)
PASSAGES = [
    Evidence(
        url="http://127.0.0.1/seine",
        title="Seine",
        text="Home. The Seine is a river that flows through Paris into the English Channel at Le Havre. "
        "Tickets for the museum are sold online.",
    ),
    Evidence(
        url="http://127.0.0.1/loire",
        title="Loire",
        text="The Loire is the longest river in France, flowing from the Massif Central to the Atlantic. "
        "Read more.",
    ),
]


def test_sentences_drop_fragments_and_repeats():
    twice = [PASSAGES[0], PASSAGES[0].model_copy(update={"url": "http://127.0.0.1/copy"})]
    sentences = evidence_sentences(twice)
    assert sentences == [
        "The Seine is a river that flows through Paris into the English Channel at Le Havre.",
        "Tickets for the museum are sold online.",
    ]
    assert evidence_sentences([Evidence(url="u", title="t", text="Home. Read more.")]) == []


def test_each_candidate_gets_the_sentence_about_it(embedder):
    assert extract_description(SEINE, PASSAGES, embedder).startswith("The Seine is a river")
    assert extract_description(LOIRE, PASSAGES, embedder).startswith("The Loire is the longest river")


def test_extract_mode_describes_without_the_llm_and_caches(embedder):
    cfg = EnhancerConfig(condense="extract")
    cache = LRU()
    state = {"candidates": [SEINE, LOIRE], "evidence": PASSAGES}
    out = enhance(state, llm=FailingLLM(), embedder=embedder, cfg=cfg, cache=cache)
    described = {c.entity.id: c.enhanced_description for c in out["candidates"]}
    assert described["seine"].startswith("The Seine") and described["loire"].startswith("The Loire")
    detail = out["_detail"]
    assert detail["condensed_by"] == "extract" and detail["llm_calls"] == []
    assert (detail["extracted"], detail["cached"]) == (2, 0)
    # the same evidence again: from the cache, and no model at all is needed
    again = enhance(state, llm=None, embedder=embedder, cfg=cfg, cache=cache)
    assert (again["_detail"]["extracted"], again["_detail"]["cached"]) == (0, 2)
    assert {c.entity.id: c.enhanced_description for c in again["candidates"]} == described


def test_extract_mode_without_matching_evidence_is_skipped(embedder):
    off_topic = [Evidence(url="u", title="Opening hours", text="The shop opens at nine and closes at six every weekday.")]
    out = enhance({"candidates": [SEINE], "evidence": off_topic}, llm=None, embedder=embedder,
                  cfg=EnhancerConfig(condense="extract"), cache=LRU())
    assert out == {"_skipped": "no evidence matched the candidates"}


def test_the_llm_mode_still_needs_a_model(embedder):
    out = enhance({"candidates": [SEINE], "evidence": PASSAGES}, llm=None, embedder=embedder,
                  cfg=EnhancerConfig(condense="llm"), cache=LRU())
    assert out == {"_skipped": "enhancer disabled"}


def test_kb_only_with_extract_is_refused_at_load():
    with pytest.raises(ValidationError, match="kb_only"):
        EnhancerConfig(kb_only=True, condense="extract")
    # extract is the default: a config that asks for kb_only alone is told what to add
    from retlink.agent.config import load_config
    from retlink.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"condense: extract \(the default\).*set condense: llm"):
        load_config({"enhancer": {"kb_only": True}})
    assert load_config({"enhancer": {"kb_only": True, "condense": "llm"}}).enhancer.kb_only
    assert not load_config({"enhancer": {"enabled": False, "kb_only": True}}).enhancer.enabled  # nothing runs


@pytest.mark.slow
def test_a_demo_link_traces_the_extracted_descriptions(demo_kb_path, demo_dir, demo_examples):
    from retlink import Linker
    from tests.conftest import fast_config

    linker = Linker.from_config(fast_config(demo_kb_path, enhancer={"condense": "extract"}))
    ex = demo_examples[0]
    result = linker.link(demo_dir / ex["image"], ex["mention"], context=ex["context"])
    by_node = {e.node: e for e in result.trace}
    enhance_step = by_node["enhance"]
    assert enhance_step.skipped is None, enhance_step
    assert enhance_step.detail["condensed_by"] == "extract" and enhance_step.detail["llm_calls"] == []
    described = [c for c in result.candidates if c.enhanced_description]
    assert described and all(c.entity.id in enhance_step.detail["enhanced"] for c in described)
    assert len(by_node["reason"].detail["llm_calls"]) == 1
