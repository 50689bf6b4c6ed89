"""The linking graph under LangGraph checkpointers: its state is plain data that LangGraph's own
serializer stores and restores exactly (the search budget travels as a spec, images as pixels),
and a link interrupted by a crash in a node resumes from an SQLite checkpoint, in a new Linker,
to the same result without re-running the steps that had finished.

The crash is a fault injected into the reasoner (`CrashingReasoner`, a fault named as such): it
raises once, as a process dying mid-link would leave things; everything else is the real graph
with the embedded default's models on the demo KB and its local search corpus.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Send

from retlink import CheckpointError, ConfigError, Linker
from retlink.agent.backends import build_components
from retlink.agent.config import load_config
from retlink.agent.graph import route_search
from retlink.tools.checkpoint import state_serializer
from retlink.tools.scrape import Budget, resolve_budget
from retlink.tools.scrape.budget import BudgetRegistry
from tests.conftest import fast_config

IMAGE = "images/coffee.jpg"
MENTION, CONTEXT = "Java", "A fresh cup of [Java] on the saucer."


def same(a: Any, b: Any) -> bool:
    """Deep equality that compares numpy arrays by dtype, shape and values."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def round_trip(value: Any) -> Any:
    ser = state_serializer()
    return ser.loads_typed(ser.dumps_typed(value))


def test_search_branches_carry_a_budget_spec_that_serialises_and_resolves_to_one_budget():
    cfg = load_config(None).search
    sends = route_search({"queries": ["java coffee", "java island"]}, cfg=cfg)
    assert [s.node for s in sends] == ["search", "search"]
    spec = sends[0].arg["budget"]
    assert spec == sends[1].arg["budget"] and spec["max_pages"] == cfg.max_pages
    for ser in (JsonPlusSerializer(), state_serializer()):  # LangGraph's default, and retlink's strict one
        back = ser.loads_typed(ser.dumps_typed(sends))
        assert [(s.node, s.arg) for s in back] == [(s.node, s.arg) for s in sends]
    # every branch of the link resolves the spec to the one shared budget (its accounting)
    budget = resolve_budget(spec)
    assert budget is resolve_budget(round_trip(spec)) and budget.take_page()
    assert resolve_budget(round_trip(spec)).pages_used == 1
    other = route_search({"queries": ["x"]}, cfg=cfg)[0].arg["budget"]
    assert other["id"] != spec["id"] and resolve_budget(other) is not budget
    # what the state used to carry, the live budget, is what a checkpointer cannot store
    with pytest.raises(TypeError, match="not msgpack serializable"):
        JsonPlusSerializer().dumps_typed(Send("search", {"query": "q", "budget": Budget(3, 5.0)}))


def test_budget_registry_forgets_the_least_recently_used_budget():
    registry = BudgetRegistry(maxsize=2)
    specs = [{"id": str(i), "max_pages": 2, "seconds": None} for i in range(3)]
    first = registry.resolve(specs[0])
    registry.resolve(specs[1])
    registry.resolve(specs[2])
    assert registry.resolve(specs[2]) is registry.resolve(specs[2])
    assert registry.resolve(specs[0]) is not first  # evicted: a fresh budget


def test_pil_and_tensor_inputs_are_stored_as_arrays_that_validate_the_same(demo_dir):
    from PIL import Image

    from retlink.tools.images import from_pixels, load_image, storable_input, to_pixels, to_tensor

    pil = Image.open(demo_dir / IMAGE).convert("P")  # a palette image: converted to RGB first
    for given in (pil, to_tensor(pil.convert("RGB")), demo_dir / IMAGE, (demo_dir / IMAGE).read_bytes()):
        stored = round_trip(storable_input(given))
        assert np.array_equal(to_pixels(load_image(stored)), to_pixels(load_image(given))), type(given)
    pixels = to_pixels(pil)
    assert pixels.dtype == np.uint8 and np.array_equal(to_pixels(from_pixels(round_trip(pixels))), pixels)


def test_checkpointer_config_is_checked_at_load(tmp_path):
    assert load_config(None).checkpointer.kind == "none"
    with pytest.raises(ConfigError, match=r"checkpointer.*needs a path"):
        load_config({"checkpointer": {"kind": "sqlite"}})
    with pytest.raises(ConfigError, match=r"takes no path"):
        load_config({"checkpointer": {"kind": "memory", "path": str(tmp_path / "x.sqlite")}})
    (tmp_path / "cfg.yaml").write_text("checkpointer: {kind: sqlite, path: runs/links.sqlite}\n")
    assert load_config(tmp_path / "cfg.yaml").checkpointer.path == tmp_path / "runs" / "links.sqlite"


def test_a_thread_id_without_a_checkpointer_is_a_typed_error(linker, demo_dir):
    with pytest.raises(CheckpointError, match="needs a checkpointer"):
        linker.link(demo_dir / IMAGE, MENTION, CONTEXT, thread_id="t1")


@pytest.mark.slow  # one full link with the real models (search, enhancer, reasoner)
def test_every_saved_state_of_a_link_round_trips_through_the_serializer(demo_kb_path, demo_dir):
    with Linker.from_config(fast_config(demo_kb_path, checkpointer={"kind": "memory"})) as linker:
        result = linker.link(demo_dir / IMAGE, MENTION, CONTEXT)
        thread = {"configurable": {"thread_id": result.thread_id}}
        history = list(linker._loop.submit(_history(linker.graph, thread)).result())
    assert result.entity_id == "java_coffee" and result.thread_id
    nodes = [e.node for e in result.trace]
    assert "search" in nodes  # the fan-out ran, its Sends checkpointed (a budget lock would have failed)
    assert len(history) >= len(set(nodes))
    for snap in history:
        back = round_trip(snap.values)
        assert same(back, snap.values), snap.next
    final = history[0].values
    assert isinstance(final["pixels"], np.ndarray) and final["pixels"].dtype == np.uint8
    assert round_trip(final["result"]) == final["result"]


async def _history(graph, thread) -> list:
    return [s async for s in graph.aget_state_history(thread)]


class CrashingReasoner:
    """Fault injection: the reasoner's process "crashes" (an unexpected error) on its first call,
    then answers through the real model. Counts its calls."""

    def __init__(self, real) -> None:
        self.real, self.name, self.calls = real, real.name, 0

    def choose(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("fault injected: the reasoner crashed")
        return self.real.choose(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.real.generate(*args, **kwargs)


@pytest.mark.slow  # two full links with the real models
def test_a_crashed_link_resumes_from_sqlite_with_the_same_result(demo_kb_path, demo_dir, tmp_path):
    db = tmp_path / "links.sqlite"
    cfg = fast_config(demo_kb_path, checkpointer={"kind": "sqlite", "path": str(db)})
    image = demo_dir / IMAGE
    with Linker.from_config(cfg) as clean_linker:
        clean = clean_linker.link(image, MENTION, CONTEXT)
    components = build_components(cfg)
    crashing = CrashingReasoner(components.reasoner_llm)
    with Linker(dataclasses.replace(components, reasoner_llm=crashing)) as first:
        with pytest.raises(RuntimeError, match="fault injected") as crash:
            first.link(image, MENTION, CONTEXT, thread_id="link-1")
        assert any("thread 'link-1'" in note for note in crash.value.__notes__)
        with pytest.raises(CheckpointError, match="already holds a link"):
            first.link(image, MENTION, CONTEXT, thread_id="link-1")
    assert crashing.calls == 1

    # a new Linker over the same file, as a restarted process would make
    with Linker.from_config(cfg) as second:
        saved = second.snapshot("link-1")
        assert saved.next == ("reason",)  # everything before the reasoner was saved
        done = [e.node for e in saved.values["trace"]]
        resumed = second.resume("link-1")
        with pytest.raises(CheckpointError, match="no checkpoint"):
            second.resume("never-linked")
        again = second.resume("link-1")  # a finished thread: its result, nothing re-run

    nodes = [e.node for e in resumed.trace]
    assert nodes == [e.node for e in clean.trace]  # each step once, in the clean run's order
    # the steps that finished before the crash were not run again: their trace events are the
    # saved ones (same timings), and only the reasoner onwards ran on resume
    assert resumed.trace[: len(done)] == saved.values["trace"]
    assert done == nodes[: nodes.index("reason")]
    assert resumed.thread_id == "link-1" and again.model_dump() == resumed.model_dump()
    assert resumed.entity_id == clean.entity_id == "java_coffee"
    assert resumed.decided_by == clean.decided_by and resumed.rationale == clean.rationale
    assert [c.entity.id for c in resumed.candidates] == [c.entity.id for c in clean.candidates]
    assert [e.url for e in resumed.evidence] == [e.url for e in clean.evidence]
    assert resumed.score == pytest.approx(clean.score, abs=1e-6)
