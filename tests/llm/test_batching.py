"""The micro-batcher in front of the in-process LLM (issue 20, item 4): concurrent calls run as
one left-padded batch, and each row computes what it computes alone, within a pinned tolerance.
Real SmolLM2-135M weights (the embedded default)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from retlink.core.schema import LLMConfig
from retlink.tools.llm.batcher import MicroBatcher
from retlink.tools.llm.transformers_llm import ANSWER_PREFIX, OptionTree, Row
from tests.llm.llm_prompts import CHOOSE, CHOOSE_LONG, DESCRIBE, LOGP_ATOL, rows


@pytest.fixture(scope="module")
def llm():
    from retlink.agent.backends import shared_llm

    return shared_llm(LLMConfig())


def test_a_row_in_a_padded_batch_computes_what_it_computes_alone(llm):
    alone = [llm._run_rows([r])[0] for r in rows(llm)]
    together = llm._run_rows(rows(llm))
    for a, b in zip(alone, together, strict=True):
        assert b.new_ids == a.new_ids and b.text == a.text
        assert b.usage == a.usage
        if a.scores is not None:
            assert b.scores == pytest.approx(a.scores, abs=LOGP_ATOL)
    assert together[3].new_ids == [] and together[3].scores is not None  # no reasoning: scored from the prompt
    assert len(together[4].new_ids) == 6


def reference_scores(llm, row, text: str) -> list[float]:
    """Each option scored the plain way: one forward pass, no cache, over prompt + reasoning +
    "Answer:" + the option, summing the option tokens' log-probabilities."""
    _, suffix = llm._suffix(text)
    scores = []
    for option in row.options:
        o = llm.tokenizer(" " + option, add_special_tokens=False).input_ids
        ids = row.ids + suffix + o
        with torch.inference_mode():
            logp = torch.log_softmax(llm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        start = len(row.ids) + len(suffix) - 1
        scores.append(sum(float(logp[start + k, t]) for k, t in enumerate(o)))
    return scores


def test_option_scores_equal_each_option_scored_alone_by_a_plain_forward_pass(llm):
    """The options of a row share one tree-masked sequence over the row's KV cache; each must
    score what it scores with nothing else in the sequence and no cache at all."""
    batch = rows(llm)
    for got in (llm._run_rows(batch), [llm._run_rows([r])[0] for r in batch]):
        scored = [(r, g) for r, g in zip(batch, got, strict=True) if r.options]
        assert len(scored) == 3
        for r, g in scored:
            assert g.scores == pytest.approx(reference_scores(llm, r, g.text), abs=LOGP_ATOL)


def test_option_scores_hold_under_eager_attention_too(llm):
    """The tree mask is additive, so a model without SDPA (eager attention adds the mask to its
    scores) scores the options as the plain forward pass does."""
    batch = rows(llm)
    before = llm.model.config._attn_implementation
    llm.model.set_attn_implementation("eager")
    try:
        assert llm.model.config._attn_implementation == "eager"
        got = llm._run_rows(batch)
        for r, g in zip(batch, got, strict=True):
            if r.options:
                assert g.scores == pytest.approx(reference_scores(llm, r, g.text), abs=LOGP_ATOL)
    finally:
        llm.model.set_attn_implementation(before)


def test_the_option_tree_masks_positions_and_reads():
    """Model-free: suffix [10, 11], options [1, 2] and [3]: each option sees the suffix and its own
    earlier tokens, never the other option; positions restart after the suffix; each option token
    is read from the logits of the token before it."""
    tree = OptionTree.build([10, 11], [[1, 2], [3]])
    assert tree.ids == [10, 11, 1, 2, 3]
    assert tree.positions == [0, 1, 2, 3, 2]
    assert tree.reads == [[(1, 1), (2, 2)], [(1, 3)]]
    seen = tree.mask(6)
    sees = {q: [k for k in range(6) if seen[q, k]] for q in range(6)}
    assert sees == {0: [0], 1: [0, 1], 2: [0, 1, 2], 3: [0, 1, 2, 3], 4: [0, 1, 4], 5: [5]}  # 5: padding
    logp = torch.zeros((5, 20))
    logp[1, 1], logp[2, 2], logp[1, 3] = -1.0, -2.0, -4.0
    assert tree.scores(logp) == [-3.0, -4.0]
    with pytest.raises(ValueError, match="at least one token"):
        OptionTree.build([10], [[1], []])
    with pytest.raises(ValueError, match="suffix"):
        OptionTree.build([], [[1]])


def test_rows_with_nothing_to_decode_run_alone(llm, monkeypatch):
    """No chain of thought in any row: no padded batch cache is built (it only cost time), and
    each row's scores are exactly its own."""
    scoring = [Row(llm._prompt_ids(CHOOSE), 0, (ANSWER_PREFIX,), ["Q1", "Q2", "NIL"]),
               Row(llm._prompt_ids(CHOOSE_LONG), 0, (ANSWER_PREFIX,), ["java_coffee", "java_lang", "NIL"])]
    alone = [llm._run_rows([r])[0] for r in scoring]
    sizes = []
    run_together = llm._run_together
    monkeypatch.setattr(llm, "_run_together", lambda rs: sizes.append(len(rs)) or run_together(rs))
    together = llm._run_rows(scoring)
    assert sizes == [1, 1]
    assert [r.scores for r in together] == [r.scores for r in alone] and all(r.new_ids == [] for r in together)
    sizes.clear()
    llm._run_rows([*scoring, rows(llm)[1]])  # one row decodes: the batch runs together
    assert sizes == [3]


def test_the_decode_loop_matches_transformers_generate(llm):
    """Anchor: alone, the hand-written greedy loop emits the tokens `generate` does (same
    repetition penalty, no stop strings)."""
    ids = torch.tensor([llm._prompt_ids(DESCRIBE)])
    ref = llm.model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
        repetition_penalty=1.2, pad_token_id=llm.tokenizer.pad_token_id,
    )
    [mine] = llm._run_rows([Row(ids[0].tolist(), 10)])
    assert mine.new_ids == ref[0, ids.shape[1] :].tolist()


def test_concurrent_calls_share_one_batch_and_get_their_own_answers(llm):
    alone_choice = llm.choose(CHOOSE_LONG, ["java_coffee", "java_lang", "java_island", "NIL"], max_reasoning_tokens=6)
    alone_gen = llm.generate_batch([DESCRIBE, CHOOSE], max_tokens=6, stop_at_sentence=True)
    results: dict[str, object] = {}
    window, llm.batcher.window_s = llm.batcher.window_s, 1.0  # wide enough that all three meet on a loaded machine
    before = len(llm.batcher.batch_sizes)
    try:
        calls = {
            "choice": lambda: llm.choose(CHOOSE_LONG, ["java_coffee", "java_lang", "java_island", "NIL"], max_reasoning_tokens=6),
            "gen": lambda: llm.generate_batch([DESCRIBE, CHOOSE], max_tokens=6, stop_at_sentence=True),
            "one": lambda: llm.generate(DESCRIBE, max_tokens=4),
        }
        threads = [threading.Thread(target=lambda k=k, f=f: results.__setitem__(k, f())) for k, f in calls.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        llm.batcher.window_s = window
    assert 4 in llm.batcher.batch_sizes[before:], llm.batcher.batch_sizes[before:]  # 1 + 2 + 1 rows, one batch
    choice = results["choice"]
    assert choice.option == alone_choice.option and choice.raw == alone_choice.raw
    for o, p in alone_choice.probabilities.items():
        assert choice.probabilities[o] == pytest.approx(p, abs=1e-3)
    assert [g.text for g in results["gen"]] == [g.text for g in alone_gen]
    assert results["one"].usage.generated_tokens == 4


def test_batcher_gathers_requests_keeps_them_whole_and_passes_errors():
    seen: list[list[int]] = []
    gate = threading.Event()

    def run(batch: list[int]) -> list[int]:
        gate.wait(5)
        seen.append(list(batch))
        if -1 in batch:
            raise ValueError("bad row")
        return [x * 10 for x in batch]

    b = MicroBatcher(run, window_s=0.3, max_rows=4)
    out: dict[str, object] = {}

    def call(name: str, rows: list[int]) -> None:
        try:
            out[name] = b.submit(rows)
        except ValueError as e:
            out[name] = e

    threads = [threading.Thread(target=call, args=(n, r)) for n, r in [("a", [1, 2]), ("b", [3]), ("c", [4, 5])]]
    for t in threads:
        t.start()
        time.sleep(0.02)
    gate.set()
    for t in threads:
        t.join()
    assert out["a"] == [10, 20] and out["b"] == [30] and out["c"] == [40, 50]
    assert sorted(len(s) for s in seen) == [2, 3]  # a + b met in one batch; c did not fit (4 rows at most)
    assert b.submit([]) == []
    threads = [threading.Thread(target=call, args=(n, r)) for n, r in [("d", [-1]), ("e", [6])]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [k for k in ("d", "e") if isinstance(out[k], ValueError)]
    assert "d" in errors and b.submit([7]) == [70]  # the worker survives a failed batch
