"""KB-only enhanced descriptions (issue 20, item 3): generated once per entity, model and prompt,
kept on disk, and reused by later links and processes without calling the LLM. Real SmolLM2."""

from __future__ import annotations

import pytest

from retlink.agent.nodes.enhancer import enhance
from retlink.core.schema import EnhancerConfig, LLMConfig
from retlink.core.types import Candidate, Entity
from retlink.tools.kb.descriptions import DescriptionStore, description_key
from retlink.tools.lru import LRU


class CountingLLM:
    """The real model, with the prompts it was asked to complete counted (a spy, not a fake)."""

    def __init__(self, llm) -> None:
        self.llm, self.name, self.prompts = llm, llm.name, []

    def generate_batch(self, batch, **kw):
        self.prompts += batch
        return self.llm.generate_batch(batch, **kw)


@pytest.fixture(scope="module")
def llm():
    from retlink.agent.backends import shared_llm

    return shared_llm(LLMConfig())


@pytest.fixture(scope="module")
def embedder():
    from retlink.tools.kb.embedders import shared_text_embedder

    return shared_text_embedder()


CANDIDATES = [
    Candidate(entity=Entity(id="seine", name="Seine", aliases=["La Seine"], description="River flowing through Paris."), score=0.8),
    Candidate(entity=Entity(id="loire", name="Loire", description="Longest river in France."), score=0.6),
    Candidate(entity=Entity(id="rhone", name="Rhone", description="River from the Alps to the Mediterranean."), score=0.5),
]


def test_second_link_reads_the_description_from_disk(llm, embedder, tmp_path):
    cfg = EnhancerConfig(kb_only=True, condense="llm", top_n=2, max_new_tokens=12)
    state = {"candidates": CANDIDATES, "evidence": []}
    first = CountingLLM(llm)
    out = enhance(state, llm=first, embedder=embedder, cfg=cfg, cache=LRU(), store=DescriptionStore(tmp_path))
    assert len(first.prompts) == 2 and out["_detail"]["generated"] == 2
    assert out["_detail"]["kb_only"] == ["loire", "seine"] and len(out["_detail"]["llm_calls"]) == 2
    described = {c.entity.id: c.enhanced_description for c in out["candidates"]}
    assert described["seine"] and described["loire"] and described["rhone"] is None  # top_n = 2
    # another link in a new process: a fresh memory cache, the same folder; no LLM call at all
    second = CountingLLM(llm)
    again = enhance(state, llm=second, embedder=embedder, cfg=cfg, cache=LRU(), store=DescriptionStore(tmp_path))
    assert second.prompts == [] and again["_detail"]["generated"] == 0 and again["_detail"]["llm_calls"] == []
    assert {c.entity.id: c.enhanced_description for c in again["candidates"]} == described
    # a new candidate set: only the entity not yet described is generated
    third = CountingLLM(llm)
    shifted = {"candidates": [CANDIDATES[2], CANDIDATES[0]], "evidence": []}
    enhance(shifted, llm=third, embedder=embedder, cfg=cfg, cache=LRU(), store=DescriptionStore(tmp_path))
    assert len(third.prompts) == 1 and "Rhone" in third.prompts[0][1]["content"]


def test_the_key_changes_with_the_kb_text_the_model_and_the_prompt():
    msgs = [{"role": "user", "content": "Entity: Seine"}]
    key = description_key("m", "seine", msgs, 12)
    assert key.startswith("m|seine|")
    assert key != description_key("m", "seine", [{"role": "user", "content": "Entity: Seine (new text)"}], 12)
    assert key != description_key("other", "seine", msgs, 12)
    assert key != description_key("m", "seine", msgs, 24)


def test_unreadable_entries_are_misses(tmp_path, caplog):
    store = DescriptionStore(tmp_path)
    store.put("k", "A river.")
    assert store.get("k") == "A river." and store.get("other") is None
    path = next(tmp_path.rglob("*.json"))
    path.write_text("{torn")
    assert store.get("k") is None and "unreadable" in caplog.text


def test_without_kb_only_nothing_changes(llm, embedder, tmp_path):
    spy = CountingLLM(llm)
    out = enhance({"candidates": CANDIDATES, "evidence": []}, llm=spy, embedder=embedder, cfg=EnhancerConfig(),
                  cache=LRU(), store=DescriptionStore(tmp_path))
    assert out["_skipped"] == "no evidence" and spy.prompts == [] and not any(tmp_path.iterdir())
