"""Each node on its own, with the real small models of the embedded default."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from retlink.agent.nodes.captioner import caption
from retlink.agent.nodes.decide import decide, fallback
from retlink.agent.nodes.enhancer import assign_evidence, enhance
from retlink.agent.nodes.planner import plan_queries
from retlink.agent.nodes.reasoner import (
    blend,
    reason,
    retrieval_distribution,
    route_after_reason,
)
from retlink.agent.nodes.retriever import fuse, mention_text, retrieve
from retlink.agent.nodes.searcher import search
from retlink.agent.nodes.validator import validate
from retlink.core.errors import EmptyMentionError, InvalidImageError
from retlink.core.schema import (
    CaptionRouteConfig,
    DecisionConfig,
    EnhancerConfig,
    KBConfig,
    LimitsConfig,
    ReasonerConfig,
    SearchConfig,
)
from retlink.core.types import NIL, Candidate, Caption, Entity
from retlink.tools.llm.base import Choice
from retlink.tools.lru import LRU


@pytest.fixture(scope="module")
def parts(linker):
    return linker.components


@pytest.fixture(scope="module")
def chelsea_state(parts, demo_dir):
    state = {"image": demo_dir / "images" / "chelsea.jpg", "mention": " Chelsea ", "context": "[Chelsea] dozes on the windowsill."}
    state.update(validate(state, limits=LimitsConfig()))
    state.update(caption(state, captioner=parts.captioner))
    state.update(retrieve(state, kb=parts.kb, text_embedder=parts.text_embedder, image_embedder=parts.image_embedder, cfg=KBConfig()))
    return state


def test_validate(demo_dir):
    out = validate({"image": demo_dir / "images" / "coffee.jpg", "mention": "  Java ", "context": ""}, limits=LimitsConfig())
    assert out["mention"] == "Java" and out["context"] == "Java" and out["pixels"].shape[-1] == 3
    # an image with no mention is an image-only link; neither is nothing to link
    image_only = validate({"image": demo_dir / "images" / "coffee.jpg", "mention": "   "}, limits=LimitsConfig())
    assert image_only["mention"] == "" and image_only["pixels"].shape[-1] == 3
    with pytest.raises(EmptyMentionError):
        validate({"image": None, "mention": "   ", "context": ""}, limits=LimitsConfig())
    with pytest.raises(InvalidImageError):
        validate({"image": demo_dir / "nope.jpg", "mention": "Java"}, limits=LimitsConfig())


def test_caption_names_the_cat(chelsea_state):
    cap = chelsea_state["caption"]
    assert any("cat" in label or label == "tabby" for label, _ in cap.labels[:3])
    assert 0 < cap.confidence <= 1 and "tabby" in cap.text


def test_retrieve_unions_alias_text_and_image(chelsea_state):
    cands = chelsea_state["candidates"]
    ids = [c.entity.id for c in cands]
    assert ids[0] == "chelsea_cat"
    assert "tabby_cat" in ids  # found by image/text, not by alias
    top = cands[0]
    assert top.alias_match and top.image_score is not None and top.image_score > 0.8
    assert all(a.score >= b.score for a, b in itertools.pairwise(cands))
    assert chelsea_state["image_vector"] is not None


def test_fusion_rules():
    cfg = KBConfig(text_weight=0.6, image_weight=0.4, alias_bonus=0.1)
    assert fuse(0.5, None, False, cfg) == pytest.approx(0.5)  # no image: text alone, not penalised
    assert fuse(0.5, 1.0, False, cfg) == pytest.approx(0.7)
    assert fuse(0.5, 1.0, True, cfg) == pytest.approx(0.8)
    assert fuse(0.5, 1.0, False, cfg, image_scale=0.0) == pytest.approx(0.5)
    assert mention_text("Java", "the cup.") == "Java. the cup."  # the caption stays out of the text side


def test_plan_queries_routes():
    cands = [Candidate(entity=Entity(id=f"e{i}", name=f"Name {i}"), score=1 - i / 10) for i in range(5)]
    sure = Caption(text="x", labels=[("tabby", 0.9), ("tiger cat", 0.05)], confidence=0.9)
    state = {"mention": "Chelsea", "context": "[Chelsea] naps.", "caption": sure, "candidates": cands}
    cfg = SearchConfig(max_queries=3, widened_max_queries=5)
    out = plan_queries(state, cfg=cfg, route=CaptionRouteConfig(), n_backends=1)
    assert out["queries"] == ["Chelsea tabby tiger cat", "Name 0", "Name 1"]
    unsure = {**state, "caption": Caption(text="x", labels=[("bubble", 0.1)], confidence=0.1)}
    out = plan_queries(unsure, cfg=cfg, route=CaptionRouteConfig(), n_backends=1)
    assert out["queries"][0] == "[Chelsea] naps." and len(out["queries"]) == 5 and out["_detail"]["widened"]
    perturbed = {**state, "perturbed": True}
    assert len(plan_queries(perturbed, cfg=cfg, route=CaptionRouteConfig(), n_backends=1)["queries"]) == 5
    assert plan_queries(state, cfg=cfg, route=CaptionRouteConfig(), n_backends=0)["_skipped"]
    assert plan_queries(state, cfg=SearchConfig(max_queries=0, widened_max_queries=0), route=CaptionRouteConfig(), n_backends=1)["_skipped"] == "no query budget"


def test_search_node_reads_the_local_corpus(parts):
    local = parts.search_backends[0]
    assert local.search_sync("Chelsea, the tabby cat in scikit-image", 3)[0].url.endswith("/chelsea-cat")
    out = asyncio.run(search({"query": "Chelsea tabby"}, backends=parts.search_backends, cfg=parts.config.search))
    urls = [e.url for e in out["evidence"]]
    assert any(u.endswith("/chelsea-cat") for u in urls)
    assert all(e.query == "Chelsea tabby" and e.text for e in out["evidence"])
    assert out["search_failures"] == []


def test_enhance_writes_descriptions_and_caches(parts, chelsea_state):
    ev = asyncio.run(search({"query": "Chelsea tabby"}, backends=parts.search_backends, cfg=parts.config.search))["evidence"]
    state = {**chelsea_state, "evidence": ev}
    assigned = assign_evidence(state["candidates"][:2], ev, parts.text_embedder)
    assert assigned["chelsea_cat"][0].url.endswith("/chelsea-cat")
    cache = LRU()
    cfg = EnhancerConfig(condense="llm", top_n=2, max_new_tokens=24)
    out = enhance(state, llm=parts.enhancer_llm, embedder=parts.text_embedder, cfg=cfg, cache=cache)
    enhanced = {c.entity.id: c.enhanced_description for c in out["candidates"]}
    assert enhanced["chelsea_cat"], "the top candidate with matching evidence gets a description"
    again = enhance(state, llm=parts.enhancer_llm, embedder=parts.text_embedder, cfg=cfg, cache=cache)
    assert again["_detail"]["generated"] == 0 and cache.hits >= 1
    assert enhance({**state, "evidence": []}, llm=parts.enhancer_llm, embedder=parts.text_embedder, cfg=cfg, cache=cache)["_skipped"] == "no evidence"
    assert enhance(state, llm=None, embedder=parts.text_embedder, cfg=cfg, cache=cache)["_skipped"] == "enhancer disabled"


class RecordingLLM:
    """The real reasoner model, with each `choose` call's messages and options kept (a spy, not a
    fake: the answer is the model's)."""

    def __init__(self, llm) -> None:
        self.llm = llm
        self.calls: list[tuple[list[dict], list[str]]] = []

    def choose(self, messages, options, **kwargs):
        self.calls.append((messages, list(options)))
        return self.llm.choose(messages, options, **kwargs)


def test_reason_gives_a_constrained_answer(parts, chelsea_state):
    llm = RecordingLLM(parts.reasoner_llm)
    out = reason(chelsea_state, llm=llm, cfg=ReasonerConfig(max_reasoning_tokens=16, min_confidence=0.0))
    choice = out["choice"]
    candidates = chelsea_state["candidates"][: ReasonerConfig().max_candidates]
    # the model is asked about this link: its mention, context and every candidate, and may
    # answer only with a candidate's id or NIL (the tiny test model's pick itself is not checked)
    [(messages, options)] = llm.calls
    prompt = "\n".join(str(m["content"]) for m in messages)
    assert "Chelsea" in prompt and "dozes on the windowsill" in prompt
    assert all(c.entity.id in prompt and c.entity.name in prompt for c in candidates)
    assert options == [c.entity.id for c in candidates] + [NIL]
    assert choice.option in options and set(choice.probabilities) == set(options)
    assert sum(choice.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert out["attempts"] == 1
    strict = reason(chelsea_state, llm=parts.reasoner_llm, cfg=ReasonerConfig(max_reasoning_tokens=0, min_confidence=1.0))
    assert strict["choice"] is None and strict["_skipped"]


def test_a_repair_attempt_keeps_the_first_attempts_reasoning():
    """A served reasoner whose first answer is broken JSON (injected by `QueuedChatServer`, a
    fault server named as such, on 127.0.0.1): the graph asks again with the repair prompt, which
    has no chain of thought of its own; the first attempt's reasoning stays in its trace event,
    in the state and in the result."""
    from retlink.agent.nodes.finalizer import finalize
    from retlink.agent.nodes.tracing import traced
    from retlink.agent.prompts import REPAIR_INSTRUCTIONS
    from retlink.tools.llm.openai_client import OpenAICompatClient
    from retlink.tools.llm.openai_llm import OpenAILLM
    from tests.loopback import LoopbackHTTP
    from tests.vllm.fake_chat_server import QueuedChatServer

    thought = "The photo shows a cat asleep on a sill, and the sentence says it dozes: the cat."
    cands = [Candidate(entity=Entity(id=i, name=n), score=s)
             for i, n, s in (("chelsea_cat", "Chelsea (cat)", 0.7), ("chelsea_fc", "Chelsea F.C.", 0.6))]
    state = {"mention": "Chelsea", "context": "[Chelsea] dozes on the windowsill.", "candidates": cands, "evidence": []}
    cfg = ReasonerConfig(max_reasoning_tokens=16, min_confidence=0.0, retries=1)
    with LoopbackHTTP(QueuedChatServer) as srv:
        srv.replies = [thought, '{"answer": "chel']  # attempt 1: the thought, then a broken answer
        llm = OpenAILLM(OpenAICompatClient("fake", srv.url("/v1"), max_retries=0), structured_output=False)
        node = traced("reason", reason, llm=llm, cfg=cfg)
        first = node(state)
        assert first["choice"] is None and first["reasoning"] == thought
        assert route_after_reason({**state, **first}, cfg=cfg) == "reason"
        state = {**state, **{k: v for k, v in first.items() if k != "trace"}}
        srv.replies = ['{"answer": "chelsea_cat"}']  # the repair attempt: the answer alone
        second = node(state)
        repair_prompt = "\n".join(str(m["content"]) for m in srv.bodies[-1]["messages"])
    assert len(srv.bodies) == 3 and REPAIR_INSTRUCTIONS in repair_prompt  # think + answer, then the repair's answer
    assert second["choice"].option == "chelsea_cat" and second["choice"].reasoning == ""
    events = [*first["trace"], *second["trace"]]
    assert [(e.detail["attempt"], e.detail["valid"], e.detail["reasoning"]) for e in events] == [
        (1, False, thought), (2, True, "")]
    assert second["reasoning"] == thought  # the repair's empty reasoning did not replace it
    state = {**state, **{k: v for k, v in second.items() if k != "trace"}}
    decided = decide(state, reasoner=cfg, decision=DecisionConfig(), head=None)
    result = finalize({**state, **decided})["result"]
    assert result.decided_by == "reasoner" and result.reasoning == thought
    # a fallback after two broken answers still shows the reasoning the link had
    out = fallback({**state, "choice": None})
    assert finalize({**state, "choice": None, **out})["result"].reasoning == thought


def test_reasoner_routes_and_decisions():
    cfg = ReasonerConfig(retries=1)
    assert route_after_reason({"choice": Choice(option="a"), "attempts": 1}, cfg=cfg) == "decide"
    assert route_after_reason({"choice": None, "attempts": 1}, cfg=cfg) == "reason"
    assert route_after_reason({"choice": None, "attempts": 2}, cfg=cfg) == "fallback"
    cands = [Candidate(entity=Entity(id="a", name="A"), score=0.9), Candidate(entity=Entity(id="b", name="B"), score=0.5)]
    dist = retrieval_distribution(cands)
    assert dist["a"] > 0.95 and sum(dist.values()) == pytest.approx(1.0)
    # a confident reasoner can overturn a close retrieval ranking, not a clear one
    close = [Candidate(entity=Entity(id="a", name="A"), score=0.60), Candidate(entity=Entity(id="b", name="B"), score=0.58)]
    says_b = Choice(option="b", confidence=0.95, probabilities={"a": 0.03, "b": 0.95, NIL: 0.02})
    assert max(blend(says_b, close, 0.35).items(), key=lambda kv: kv[1])[0] == "b"
    assert max(blend(says_b, cands, 0.35).items(), key=lambda kv: kv[1])[0] == "a"
    state = {"candidates": close, "choice": says_b}
    decided = decide(state, reasoner=ReasonerConfig(llm_weight=0.35), decision=DecisionConfig(), head=None)
    fell_back = fallback(state)
    assert decided["selected"] == "b" and fell_back["selected"] == "a"
    # the trace carries each candidate's final probability (the web page's candidate table shows it)
    for out in (decided, fell_back):
        final = out["_detail"]["final"]
        assert final == {k: round(v, 4) for k, v in out["final_scores"].items()}
        assert {"a", "b"} <= set(final) and sum(final.values()) == pytest.approx(1.0, abs=1e-3)
