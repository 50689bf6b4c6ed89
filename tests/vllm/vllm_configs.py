"""The agent config and demo examples of the vLLM tests, shared by the agent and the replica
tests."""

from __future__ import annotations

import json
from typing import Any

from retlink.agent.config import load_config
from tests.conftest import DEMO

EXAMPLES = [json.loads(line) for line in (DEMO / "examples.jsonl").read_text().splitlines() if line.strip()]


def vllm_config(base_url: str, **llm: Any) -> Any:
    """The `vllm` preset on `base_url`, with a 16-token chain of thought (the served path reads
    it from the reply's reasoning field: two requests a choice) and the LLM enhancer, so the
    served model answers both roles."""
    cfg = load_config("vllm")
    llm_cfg = cfg.reasoner.llm.model_copy(update={"base_url": base_url, **llm})
    reasoner = cfg.reasoner.model_copy(update={"llm": llm_cfg, "max_reasoning_tokens": 16})
    return cfg.model_copy(update={"reasoner": reasoner, "enhancer": cfg.enhancer.model_copy(update={"condense": "llm"})})


__all__ = ["DEMO", "EXAMPLES", "vllm_config"]
