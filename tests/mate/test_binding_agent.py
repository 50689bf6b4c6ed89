"""The MATE binding agent on real rendered scenes, with the renderer's ground truth removed.

The agent gets the PNG, the JSON text and the question only: the set is copied without its
truth/ folder before the agent sees it, so a pass cannot come from reading the answers.
"""

from __future__ import annotations

import shutil
from collections import defaultdict

import pytest

from retlink.mate.agent.graph import BindingAgent
from retlink.mate.build import MateSet
from retlink.mate.questions import exact_match

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def blind_set(mate_set_dir, tmp_path_factory) -> MateSet:
    out = tmp_path_factory.mktemp("blind") / "set"
    shutil.copytree(mate_set_dir, out, ignore=shutil.ignore_patterns("truth"))
    assert not (out / "truth").exists()
    return MateSet(out)


def test_agent_links_across_modalities_without_ground_truth(blind_set):
    agent = BindingAgent(blind_set.camera)
    right: dict[str, list[bool]] = defaultdict(list)
    for q in blind_set.questions():
        result = agent.answer(blind_set.image_path(q), blind_set.text(q), q.question)
        right[q.task].append(exact_match(result["answer"] if result["answer"] is not None else "", q.answer))
        assert [e["node"] for e in result["trace"]] == ["parse", "perceive", "link", "answer"]
    for task in ("img2data", "data2img"):
        assert len(right[task]) >= 8
        assert sum(right[task]) / len(right[task]) >= 0.9, (task, right[task])


def test_agent_finds_every_object(blind_set):
    """Perception alone: as many regions as the text lists objects, each linked."""
    agent = BindingAgent(blind_set.camera)
    for q in list(blind_set.questions())[:10]:
        trace = {e["node"]: e for e in agent.answer(blind_set.image_path(q), blind_set.text(q), q.question)["trace"]}
        assert trace["perceive"]["regions"] == q.n_objects
        assert trace["link"]["linked"] == q.n_objects and trace["link"]["mean_iou"] > 0.7


def test_a_question_outside_the_templates_is_a_typed_error(blind_set):
    from retlink.mate.agent.nodes import QuestionNotUnderstood

    q = next(blind_set.questions())
    with pytest.raises(QuestionNotUnderstood, match="not a MATE question"):
        BindingAgent(blind_set.camera).answer(blind_set.image_path(q), blind_set.text(q), "Who painted it?")
