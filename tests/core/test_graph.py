"""The linking graph end to end on the demo KB, with the real models of the embedded default."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from retlink import NIL, EmptyMentionError, InvalidImageError, Linker, Sample
from retlink.tools.images import to_tensor
from tests.conftest import fast_config


def _nodes(result) -> list[str]:
    return [e.node for e in result.trace]


@pytest.mark.slow
def test_links_demo_examples(linker, demo_dir, demo_examples):
    chosen = [demo_examples[i] for i in (0, 2, 3, 10)]  # cat, rocket, astronaut, horse
    samples = [Sample(demo_dir / ex["image"], ex["mention"], ex["context"]) for ex in chosen]
    results = linker.link_many(samples, concurrency=2)
    correct = sum(r.entity_id == ex["gold"] for r, ex in zip(results, chosen, strict=True))
    assert correct >= 3, [(r.entity_id, ex["gold"]) for r, ex in zip(results, chosen, strict=True)]
    r = results[0]
    nodes = _nodes(r)
    for node in ("validate", "caption", "retrieve", "plan_queries", "search", "enhance", "reason", "finalize"):
        assert node in nodes
    assert nodes.count("search") == len(next(e for e in r.trace if e.node == "plan_queries").detail["queries"])
    assert r.evidence and all(e.url.startswith("https://corpus.retlink.test/") for e in r.evidence)
    assert r.caption is not None and r.candidates and r.rationale.startswith("Linked to")
    assert 0 < r.score <= 1
    # the real reasoner ran on every link: a valid answer after its own generated chain of thought
    # (at most 16 tokens, fast_config's budget; it may write "Answer:" sooner) over a prompt
    # holding the candidates, and it decided
    for res in results:
        reason = next(e for e in res.trace if e.node == "reason")
        assert reason.skipped is None and reason.detail["valid"], reason
        (call,) = reason.detail["llm_calls"]
        assert 0 < call["generated_tokens"] <= 16 and call["prompt_tokens"] > 200, call
        assert res.decided_by == "reasoner" and res.reasoning.strip(), (res.decided_by, res.reasoning)
    assert all(e.seconds >= 0 for e in r.trace)


def test_every_input_kind_links(linker, demo_dir):
    """Each input kind passes validation; a full link runs on the tensor (the attack format)."""
    from retlink.agent.nodes.validator import validate
    from retlink.core.schema import LimitsConfig

    path = demo_dir / "images" / "coffee.jpg"
    pil = Image.open(path).convert("RGB")
    for image in (path, str(path), path.read_bytes(), pil):
        out = validate({"image": image, "mention": "Java"}, limits=LimitsConfig())
        assert out["pixels"].shape == (pil.height, pil.width, 3)
    r = linker.link(to_tensor(pil), "Java", "A fresh cup of [Java] on the saucer.")
    assert r.entity_id == "java_coffee"
    assert [e.node for e in r.trace][:3] == ["validate", "detect", "caption"]


def test_no_candidates_routes_to_nil(demo_kb_path, demo_dir):
    nil_linker = Linker.from_config(fast_config(demo_kb_path, kb={"min_score": 5.0}))
    r = nil_linker.link(demo_dir / "images" / "brick.jpg", "Brick")
    assert r.entity is None and r.entity_id == NIL and r.decided_by == "nil"
    assert "plan_queries" not in _nodes(r) and "reason" not in _nodes(r)
    assert "No knowledge-base entity matched" in r.rationale


def test_no_search_backend_skips_search(demo_kb_path, demo_dir):
    offline = Linker.from_config(fast_config(demo_kb_path, search={"backends": []}))
    r = offline.link(demo_dir / "images" / "moon.jpg", "Luna", "The craters of [Luna] tonight.")
    plan = next(e for e in r.trace if e.node == "plan_queries")
    assert plan.skipped == "no search backend configured"
    assert "search" not in _nodes(r) and r.evidence == []
    assert next(e for e in r.trace if e.node == "enhance").skipped == "no evidence"
    assert r.entity_id == "moon"


def test_invalid_answers_retry_once_then_fall_back(demo_kb_path, demo_dir):
    picky = Linker.from_config(fast_config(demo_kb_path, reasoner={"min_confidence": 1.0, "retries": 1}, enhancer={"enabled": False}))
    r = picky.link(demo_dir / "images" / "retina.jpg", "Retina", "A fundus photograph of the [retina].")
    assert _nodes(r).count("reason") == 2
    assert "fallback" in _nodes(r) and r.decided_by == "fallback"
    assert r.entity_id == r.candidates[0].entity.id == "retina"
    assert "the reasoner gave no valid answer" in r.rationale


def test_bad_inputs_raise_typed_errors(linker, demo_dir, tmp_path):
    with pytest.raises(InvalidImageError, match="not found"):
        linker.link(tmp_path / "missing.jpg", "Java")
    with pytest.raises(EmptyMentionError, match="nothing to link"):
        linker.link(None, "  ")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((demo_dir / "images" / "coffee.jpg").read_bytes()[:500])
    with pytest.raises(InvalidImageError, match="truncated"):
        linker.link(broken, "Java")


def test_text_only_link_skips_the_image_nodes_and_says_so(demo_kb_path):
    offline = Linker.from_config(fast_config(demo_kb_path, search={"backends": []}))
    r = offline.link(None, "Luna", "Through the telescope the craters of [Luna] look sharp and grey tonight.")
    skipped = {e.node: e.skipped for e in r.trace}
    assert skipped["detect"] == "no image" and skipped["caption"].startswith("no image")
    retrieve = next(e for e in r.trace if e.node == "retrieve")
    assert retrieve.detail["image_retrieval"] == "skipped: no image"
    assert r.caption is None and all(c.image_score is None for c in r.candidates)
    assert r.entity_id == "moon"  # the alias table and the sentence alone


def test_image_only_link_uses_no_alias_and_no_text(demo_kb_path, demo_dir):
    offline = Linker.from_config(fast_config(demo_kb_path, search={"backends": []}))
    r = offline.link(demo_dir / "images" / "moon.jpg", "", "")
    validate = next(e for e in r.trace if e.node == "validate")
    assert validate.detail["mode"] == "image only"
    detail = next(e for e in r.trace if e.node == "retrieve").detail
    assert detail["query"] == "" and detail["caption"]  # no text side: the caption's labels find candidates
    assert all(c.text_score == 0 and c.caption_score is not None for c in r.candidates)
    assert not any(c.alias_match for c in r.candidates)
    assert r.candidates and r.candidates[0].image_score is not None


def test_link_many_keeps_going_with_return_exceptions(linker, demo_dir, tmp_path):
    results = linker.link_many(
        [(tmp_path / "missing.jpg", "Java"), {"image": demo_dir / "images" / "brick.jpg", "mention": "Brick"}],
        concurrency=2,
        return_exceptions=True,
    )
    assert isinstance(results[0], InvalidImageError)
    assert results[1].entity_id == "brick"


def test_async_and_streaming(linker, demo_dir):
    async def main():
        result = await linker.alink(demo_dir / "images" / "coins.jpg", "Drachma", "Silver [drachma] coins, struck by hand.")
        events = [item async for item in linker.astream(demo_dir / "images" / "coins.jpg", "Drachma", "Silver [drachma] coins.")]
        return result, events

    result, events = asyncio.run(main())
    assert result.entity_id == "ancient_drachma"
    kinds = [k for k, _ in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    nodes = [e.node for k, e in events if k == "node"]
    assert nodes[0] == "validate" and nodes[-1] == "finalize"
    assert events[-1][1].entity_id == "ancient_drachma"
    assert [e.node for e in events[-1][1].trace] == nodes


def test_streaming_surfaces_errors(linker, tmp_path):
    async def main():
        return [item async for item in linker.astream(tmp_path / "missing.jpg", "x")]

    with pytest.raises(InvalidImageError):
        asyncio.run(main())
