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
