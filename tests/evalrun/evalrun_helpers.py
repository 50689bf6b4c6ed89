"""Config builders shared by the eval-runner tests (imported by name: no __init__.py here)."""

from __future__ import annotations

from pathlib import Path


def small_config(kb_path: Path, out: Path, **extra) -> dict:
    """Baseline + agent without search (8 reasoning tokens, no enhancer), FGSM + 3-step PGD,
    3 demo samples, IT2T only."""
    cfg = {
        "name": "small",
        "seed": 0,
        "dataset": {"key": "demo", "split": "test", "limit": 3},
        "kb": {"path": str(kb_path)},
        "pipelines": [
            {"name": "baseline", "kind": "baseline"},
            {
                "name": "agent-nosearch",
                "kind": "agent",
                "overrides": {
                    "search": {"enabled": False},
                    "enhancer": {"enabled": False},
                    "reasoner": {"max_reasoning_tokens": 8},
                    "decision": {"head": None},  # the reasoner decides: its LLM calls are counted
                },
            },
        ],
        "attacks": [
            {"name": "fgsm-8", "attack": "fgsm", "params": {"eps": "8/255"}},
            {"name": "pgd-8", "attack": "pgd", "params": {"eps": "8/255", "alpha": "2/255", "steps": 3}},
        ],
        "settings": ["it2t"],
        "metrics": {"bootstrap_resamples": 200},
        "concurrency": 2,
        "output_dir": str(out),
    }
    cfg.update(extra)
    return cfg
