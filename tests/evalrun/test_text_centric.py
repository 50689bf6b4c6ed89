"""The text-centric adversarial prompting method: LLM-instructed perturbations (`kind: llm_perturb`)
validated, stored and falling back on bad replies (the real in-process SmolLM2, and a fault-
injecting chat server on 127.0.0.1 for the faults); the drop ratio of text-perturbed settings in
the report; modality summarisation in the agent's query and prompt; chain-of-thought settings
for `retlink train`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from evalrun_helpers import small_config

from retlink.agent.prompts import reasoner_messages
from retlink.attacks.prompted import (
    ADVERSARIAL,
    PROMPTS,
    has_mention,
    llm_perturb,
    messages_for,
    rule_fallback,
    validate_rewrite,
)
from retlink.core.errors import ConfigError
from retlink.core.schema import LLMConfig
from retlink.core.types import Candidate, Caption, Entity
from retlink.datasets.base import Sample
from retlink.eval.config import SettingSpec, load_eval_config
from retlink.eval.runner import link_inputs
from tests.loopback import LoopbackHTTP
from tests.vllm.fake_chat_server import QueuedChatServer

SENTENCE = "The blue Air mark from a .com site was painted on the van."


# -- validation and the rule fallback ---------------------------------------------------------


def test_a_rewrite_must_keep_the_mention_change_the_text_and_stay_in_bounds():
    ok, why = validate_rewrite("Here is the rewritten sentence: A van, blue, Air mark, .com.", SENTENCE, "Air", "permutation")
    assert ok == "A van, blue, Air mark, .com." and why is None
    assert validate_rewrite("The air symbol on a van, from a website far away.", SENTENCE, "Air", "noise_injection") == (
        None, "the mention 'Air' is missing")  # lower-cased, the name is another word
    assert validate_rewrite(SENTENCE.upper().lower().capitalize().replace("air", "Air"), SENTENCE, "Air", "permutation")[1] == "unchanged"
    assert validate_rewrite("", SENTENCE, "Air", "noise_injection") == (None, "empty reply")
    assert validate_rewrite("Air.", SENTENCE, "Air", "information_dropout")[1].startswith("too short")
    long = "An Air mark was seen. " + "and more words " * 40
    assert validate_rewrite(long, SENTENCE, "Air", "noise_injection") == ("An Air mark was seen.", None)  # cut to its first sentence
    assert validate_rewrite("Air " + "x" * 400, SENTENCE, "Air", "noise_injection")[1].startswith("too long")
    thought, _ = validate_rewrite("It names an airline.\nThe colour is a clue.", SENTENCE, "Air", "reasoning")
    assert thought == SENTENCE + " It names an airline. The colour is a clue."


@pytest.mark.parametrize("instruction", ADVERSARIAL)
def test_the_rule_fallback_perturbs_and_never_touches_the_mention(instruction):
    text = "Reporters traced the Air Serbia emblem to a page under the .com domain of the airline."
    changed = 0
    for seed in range(20):
        out = rule_fallback(text, "Air Serbia", instruction, seed)
        assert has_mention(out, "Air Serbia"), out
        changed += out != text
        if instruction == "permutation":
            assert sorted(out.split()) == sorted(text.split())
    assert changed >= 15


def test_seeds_pick_phrasings_and_the_prompt_names_the_mention():
    for instruction in ADVERSARIAL:
        prompts = {messages_for(SENTENCE, "Air", instruction, seed)[0]["content"] for seed in range(4)}
        assert len(prompts) == len(PROMPTS[instruction]) > 1
        assert all('"Air"' in p for p in prompts)


def test_llm_perturb_settings_are_validated_at_load(tmp_path):
    SettingSpec(name="n", setting="it2t", text={"kind": "llm_perturb", "instruction": "noise_injection", "llm": {"threads": 1}})
    with pytest.raises(ValueError, match="instruction: llm_perturb needs"):
        SettingSpec(name="n", setting="it2t", text={"kind": "llm_perturb"})
    with pytest.raises(ValueError, match="instruction: only for kind: llm_perturb"):
        SettingSpec(name="d", setting="it2t", text={"kind": "word_dropout", "instruction": "permutation"})
    cfg = small_config(tmp_path / "kb", tmp_path / "runs")
    cfg["settings"] = [{"name": "p", "setting": "it2t", "text": {"kind": "llm_perturb", "instruction": "shuffle"}}]
    with pytest.raises(ConfigError, match=r"settings\[0\]\.text\.instruction"):
        load_eval_config(cfg)


def test_settings_without_llm_perturb_hash_as_before(tmp_path):
    """A word-dropout setting's fingerprint does not see the llm_perturb-only keys (a run made
    before they existed resumes)."""
    cfg = small_config(tmp_path / "kb", tmp_path / "runs")
    cfg["settings"] = [{"name": "d", "setting": "it2t", "text": {"kind": "word_dropout", "rate": 0.2}}]
    data = load_eval_config(cfg).model_dump(mode="json")
    assert set(data["settings"][0]["text"]) >= {"instruction", "fallback", "max_tokens"}
    from retlink.eval import config as eval_config

    seen = {}
    real = eval_config.fingerprint
    eval_config.fingerprint = lambda d: seen.setdefault("data", d) and real(d)
    try:
        load_eval_config(cfg).fingerprint()
    finally:
        eval_config.fingerprint = real
    assert seen["data"]["settings"][0]["text"] == {"kind": "word_dropout", "rate": 0.2}


# -- faults, injected by a fake chat server (named as such) -----------------------------------


@pytest.fixture
def faulty(tmp_path, monkeypatch) -> Iterator[LoopbackHTTP]:
    monkeypatch.setenv("RETLINK_CACHE", str(tmp_path / "cache"))
    with LoopbackHTTP(QueuedChatServer) as srv:
        srv.replies = []
        yield srv


def _served(srv: LoopbackHTTP) -> LLMConfig:
    return LLMConfig(backend="openai", model="fake", base_url=srv.url("/v1"), max_retries=0, structured_output=False)


def test_a_broken_or_failing_llm_falls_back_with_its_reason_and_only_good_replies_are_stored(faulty):
    llm = _served(faulty)
    faulty.replies = ["A tiny red van, a painted mark, a .com site."]  # the mention lost
    out = llm_perturb(SENTENCE, "Air", instruction="noise_injection", seed=0, llm=llm)
    assert out.status == "fallback" and out.reason == "the mention 'Air' is missing"
    assert has_mention(out.text, "Air") and out.text != SENTENCE  # the rule-based noise, mention kept
    faulty.replies = [500]
    out = llm_perturb(SENTENCE, "Air", instruction="permutation", seed=0, llm=llm, fallback="original")
    assert out.status == "fallback" and out.reason.startswith("backend failed") and out.text == SENTENCE
    faulty.replies = ["Painted on the van was the blue Air mark from a .com site."]
    out = llm_perturb(SENTENCE, "Air", instruction="permutation", seed=0, llm=llm)  # asked again: a failure is not stored
    assert (out.status, out.text) == ("llm", "Painted on the van was the blue Air mark from a .com site.")
    asked = len(faulty.bodies)
    assert llm_perturb(SENTENCE, "Air", instruction="permutation", seed=0, llm=llm) == out  # stored
    assert len(faulty.bodies) == asked


def test_the_record_says_how_the_text_was_made_and_the_report_gives_the_drop_ratio(faulty, demo_kb_path, tmp_path):
    """A run with a text-perturbed setting on the demo (baseline only): every record of it carries
    `text_perturbation`, and the report measures it against the unperturbed setting."""
    from retlink.eval.report import write_report
    from retlink.eval.runner import Runner

    cfg = small_config(demo_kb_path, tmp_path / "runs", attacks=[], pipelines=[{"name": "baseline", "kind": "baseline"}])
    cfg["settings"] = [
        "it2t",
        {"name": "it2t-drop", "setting": "it2t",
         "text": {"kind": "llm_perturb", "instruction": "information_dropout", "llm": _served(faulty).model_dump()}},
    ]
    faulty.replies = [500] * 3  # the served model is down: every sample falls back, none fails
    runner = Runner(load_eval_config(cfg))
    runner.run()
    recs = [json.loads(line) for line in (runner.dir / "results.jsonl").read_text().splitlines()]
    perturbed = [r for r in recs if r["setting"] == "it2t-drop"]
    assert len(perturbed) == 3 and all(r["status"] == "ok" for r in recs)
    assert all(r["text_perturbation"]["status"] == "fallback" and "backend failed" in r["text_perturbation"]["reason"]
               for r in perturbed)
    assert not any("text_perturbation" in r for r in recs if r["setting"] == "it2t")
    summary = write_report(runner.dir, plots=False)
    cell = summary["settings"]["it2t-drop"]["pipelines"]["baseline"]["clean"]
    clean = summary["settings"]["it2t"]["pipelines"]["baseline"]["clean"]
    assert summary["settings"]["it2t-drop"]["unperturbed"] == "it2t"
    assert cell["text_drop"] == pytest.approx(clean["hits@1"] - cell["hits@1"], abs=1e-3)
    if clean["hits@1"]:
        assert cell["text_drop_ratio"] == pytest.approx(cell["text_drop"] / clean["hits@1"], abs=1e-3)
    assert "text_drop" not in clean
    report = (runner.dir / "report.md").read_text()
    assert "text perturbed; against `it2t`" in report and "text DR" in report


@pytest.mark.slow
def test_the_in_process_llm_rewrites_keep_the_mention_and_are_stored(tmp_path, monkeypatch):
    """The real SmolLM2: whatever each family's reply, the text the linker gets keeps the mention;
    the second time the store answers."""
    from retlink.agent import backends

    monkeypatch.setenv("RETLINK_CACHE", str(tmp_path))
    llm = LLMConfig(threads=1)
    outs = {ins: llm_perturb(SENTENCE, "Air", instruction=ins, seed=0, llm=llm, max_tokens=32) for ins in ADVERSARIAL}
    for ins, out in outs.items():
        assert has_mention(out.text, "Air") and out.text != SENTENCE, (ins, out)
        assert out.status == "llm" or out.reason
    assert len(list((tmp_path / "perturbations").rglob("*.json"))) == 3

    def dead_llm(*_a, **_k):  # injected fault: a stored reply must not reach the model again
        raise AssertionError("the model was asked again")

    monkeypatch.setattr(backends, "shared_llm", dead_llm)
    assert {ins: llm_perturb(SENTENCE, "Air", instruction=ins, seed=0, llm=llm, max_tokens=32) for ins in ADVERSARIAL} == outs
    s = Sample(id="x:1", image_path=None, mention="Air", context=SENTENCE, gold_id="airserbia", split="test")
    notes: dict = {}
    spec = SettingSpec(name="n", setting="it2t", text={"kind": "llm_perturb", "instruction": "noise_injection",
                                                       "max_tokens": 32, "llm": {"threads": 1}})
    seed = next(k for k in range(100) if link_inputs.__globals__["text_seed"](k, s.id, "n") % 2 == 0)
    _, mention, context = link_inputs(s, spec, None, seed, notes)
    assert (mention, context) == ("Air", outs["noise_injection"].text)
    assert notes["instruction"] == "noise_injection" and notes["status"] == outs["noise_injection"].status


# -- modality summarisation --------------------------------------------------------------------


def test_the_summary_replaces_the_image_line_of_the_reasoner_prompt():
    cands = [Candidate(entity=Entity(id="java_island", name="Java", description="An island."), score=0.6)]
    caption = Caption(text="A photo that shows: espresso (80%).", labels=[("espresso", 0.8), ("cup", 0.1)])
    from retlink.agent.nodes.summarizer import image_in_words

    summary = image_in_words(caption)
    assert summary == "Tags: espresso, cup."
    assert image_in_words(Caption(text="A cup of coffee on a table.", labels=[])) == "The image shows: A cup of coffee on a table."
    plain = reasoner_messages("Java", "A cup of [Java].", caption, cands, [])[-1]["content"].splitlines()
    summed = reasoner_messages("Java", "A cup of [Java].", caption, cands, [], summary=summary)[-1]["content"].splitlines()
    assert [ln for ln in plain if ln not in summed] == ["Image shows (from a vision model, may be wrong): espresso, cup"]
    assert [ln for ln in summed if ln not in plain] == [f"Image, in words (from a vision model, may be wrong): {summary}"]


def test_the_summary_joins_the_text_query_only_when_enabled(demo_kb_path):
    from retlink import Linker
    from retlink.agent.config import RetlinkConfig
    from tests.conftest import DEMO

    base = {"kb": {"path": str(demo_kb_path)}, "search": {"enabled": False}, "reasoner": {"enabled": False}}
    with pytest.raises(ValueError, match="only mode: llm"):
        RetlinkConfig.model_validate({**base, "summary": {"enabled": True, "llm": {"threads": 1}}})
    image = DEMO / "images" / "coffee.jpg"
    context = "A cup of Java in the morning."
    off = Linker.from_config(base).link(image, mention="Java", context=context)
    on = Linker.from_config({**base, "summary": {"enabled": True}}).link(image, mention="Java", context=context)
    node = {ev.node: ev for ev in on.trace}
    assert "summarize" in node and "summarize" not in {ev.node for ev in off.trace}
    summary = node["summarize"].detail["summary"]
    tags = [label for label, _ in on.caption.labels[:3]]
    assert summary == "Tags: " + ", ".join(tags) + "."
    query_off = next(ev for ev in off.trace if ev.node == "retrieve").detail["query"]
    assert query_off == context and node["retrieve"].detail["query"] == f"{context} {summary}"


def test_an_llm_summary_without_the_mention_falls_back_to_the_template(faulty):
    from retlink.agent.nodes.summarizer import summarize
    from retlink.core.schema import SummaryConfig
    from retlink.tools.llm.openai_llm import OpenAILLM

    llm = OpenAILLM.from_config(_served(faulty))
    caption = Caption(text="A photo that shows: espresso (80%).", labels=[("espresso", 0.8)])
    state = {"pixels": object(), "mention": "Java", "context": "A cup of Java.", "caption": caption}
    cfg = SummaryConfig(enabled=True, mode="llm")
    faulty.replies = ["A cup of coffee."]
    out = summarize(state, cfg=cfg, llm=llm)
    assert out["summary"] == "Tags: espresso." and "without the mention" in out["_skipped"]
    faulty.replies = [503]
    out = summarize(state, cfg=cfg, llm=llm)
    assert out["summary"] == "Tags: espresso." and "summary LLM failed" in out["_skipped"]
    faulty.replies = ["Summary: Java here is the espresso in the cup."]
    assert summarize(state, cfg=cfg, llm=llm)["summary"] == "Java here is the espresso in the cup."


# -- chain-of-thought augmentation for the head --------------------------------------------------


def test_cot_augment_adds_a_reasoning_copy_of_each_sentence_setting(tmp_path):
    from retlink.train import load_train_config

    ev = small_config(tmp_path / "kb", tmp_path / "runs", attacks=[{"name": "fgsm-8", "attack": "fgsm", "params": {"eps": "8/255"}}])
    ev["dataset"]["split"] = "dev"
    ev["settings"] = ["it2t", "i2t", {"name": "drop", "setting": "it2t", "text": {"kind": "word_dropout"}}]
    _, (plain,) = load_train_config({"name": "h", "eval": ev, "pipelines": ["agent-nosearch"]})
    assert [s.name for s in plain.settings] == ["it2t", "i2t", "drop"]
    _, (ecfg,) = load_train_config({"name": "h", "eval": ev, "pipelines": ["agent-nosearch"], "cot_augment": {"max_tokens": 24}})
    cot = ecfg.settings[-1]
    assert [s.name for s in ecfg.settings] == ["it2t", "i2t", "drop", "it2t-cot"]  # i2t has no sentence; drop is perturbed
    assert (cot.setting, cot.text.kind, cot.text.instruction, cot.text.max_tokens) == ("it2t", "llm_perturb", "reasoning", 24)
    assert cot.pipelines == ["agent-nosearch"] and ecfg.attacks_in(cot) == ["clean", "fgsm-8"]
    with pytest.raises(ConfigError, match="cot_augment"):
        load_train_config({"name": "h", "eval": ev, "pipelines": ["agent-nosearch"], "cot_augment": {"max_tokens": 2}})
    ev["settings"] = ["i2t"]
    with pytest.raises(ConfigError, match="no setting with a sentence"):
        load_train_config({"name": "h", "eval": ev, "pipelines": ["agent-nosearch"], "cot_augment": {}})


def test_the_bundled_text_centric_configs_load():
    root = Path(__file__).resolve().parents[2] / "src/retlink/eval/configs/experiments"
    for name, kind in (("text-centric-test", "it2t"), ("text-centric-reasoner-test", "it2t"),
                       ("text-centric-text-only-test", "text_only")):
        cfg = load_eval_config(root / f"{name}.yaml")
        families = {s.name: (s.text.instruction if s.text else None) for s in cfg.settings}
        assert families == {kind: None, f"{kind}-noise": "noise_injection", f"{kind}-dropout": "information_dropout",
                            f"{kind}-permutation": "permutation"}
        assert all(s.setting == kind for s in cfg.settings)
