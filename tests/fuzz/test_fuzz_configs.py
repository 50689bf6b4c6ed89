"""Fuzz the config loaders on YAML files: the agent config (`load_config`) and the eval config
(`load_eval_config`, whose deep checks build attacks and merge pipeline overrides).

Each example starts from a valid config and replaces one value anywhere by an arbitrary one
(or adds a key), or mangles the YAML text itself. The property: a config, or a `ConfigError`
naming the file; nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from retlink.agent.config import load_config
from retlink.core.errors import ConfigError
from retlink.eval.config import load_eval_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evalrun"))
from evalrun_helpers import small_config

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats()
    | st.sampled_from(["", "8/255", "8/0", "1/3", "-1", "nan", "~", "$RETLINK_CACHE/x", "efficientnet", "agent"])
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw, base: dict) -> str:
    doc = yaml.safe_load(yaml.safe_dump(base))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in _paths(doc) if p]))
        node = doc
        for part in path[:-1]:
            node = node[part]
        if draw(st.booleans()) and isinstance(node, dict):
            node[draw(st.text(max_size=8))] = draw(values)
        else:
            node[path[-1]] = draw(values)
    text = yaml.safe_dump(doc)
    if draw(st.integers(0, 4)) == 0:  # mangle the text too
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.sampled_from(["\t", ": :", "[", "&a ", "*a", "\x00", "- ", "{"])) + text[i:]
    return text


AGENT_BASE = load_config("default").model_dump(mode="json")


def load(loader, tmp_path_factory, text: str):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        return loader(path)
    except ConfigError as e:
        assert str(path) in str(e)
        return None


@given(text=mutated(AGENT_BASE))
def test_agent_config(tmp_path_factory, text):
    load(load_config, tmp_path_factory, text)


@given(text=mutated(small_config(Path("kb"), Path("runs"))))
def test_eval_config(tmp_path_factory, text):
    load(load_eval_config, tmp_path_factory, text)


@given(text=st.text(max_size=200) | st.integers(1, 3000).map(lambda n: "[" * n) | st.integers(1, 3000).map(lambda n: "a:\n" + " " * n))
def test_any_yaml_text(tmp_path_factory, text):
    load(load_config, tmp_path_factory, text)
    load(load_eval_config, tmp_path_factory, text)
