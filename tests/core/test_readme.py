"""README's Python examples are executed, so they cannot rot."""

from __future__ import annotations

import os
import re

from tests.conftest import REPO


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_readme_python_examples_run(capsys):
    blocks = python_blocks((REPO / "README.md").read_text())
    assert blocks, "README has no python example"
    cwd = os.getcwd()
    os.chdir(REPO)  # the examples use paths relative to the repository
    try:
        namespace: dict = {}
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert "falcon_9" in capsys.readouterr().out


def test_readme_agent_config_examples_validate():
    """Every YAML block of the README made only of agent-config sections loads with load_config
    (an example with a misspelt or removed key fails here)."""
    import yaml

    from retlink.agent.config import RetlinkConfig, load_config

    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)]
    agent = [b for b in blocks if isinstance(b, dict) and set(b) <= set(RetlinkConfig.model_fields)]
    assert len(agent) >= 5  # search, kb, defences, the KB server and the replicas examples at least
    for block in agent:
        load_config(block)
    servers = [b for b in agent if "server" in b.get("kb", {})]
    assert servers and load_config(servers[0]).kb.server_name == "demo-kb"
    replicas = [b for b in agent if isinstance(b.get("reasoner", {}).get("llm", {}).get("base_url"), list)]
    assert replicas and len(load_config(replicas[0]).reasoner.llm.base_urls) == 2
