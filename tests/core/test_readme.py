"""The README's and the docs pages' examples are executed and their paths checked, so they cannot
rot: a renamed module, a moved config or a removed key fails here, not in a reader's shell."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
#: Every page a reader may follow: the README and the MkDocs site's sources.
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
#: Top-level folders whose files the pages cite as `folder/...` from the repository root.
ROOT_FOLDERS = ("src", "bench", "tests", "scripts", "docs")
#: Subpackages of src/retlink that the pages cite relative to the package (`agent/prompts.py`).
PACKAGE_FOLDERS = ("core", "tools", "agent", "attacks", "datasets", "serve", "eval", "mate", "data")


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", markdown, flags=re.S)


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def run_blocks(page: Path) -> None:
    """Execute a page's python blocks in order in one namespace (a page's later examples may use
    its earlier ones' names), from the repository root (the examples' paths are relative to it)."""
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        namespace: dict = {}
        for block in python_blocks(page.read_text()):
            exec(compile(block, page_id(page), "exec"), namespace)
    finally:
        os.chdir(cwd)


def test_readme_python_examples_run(capsys):
    assert python_blocks(README.read_text()), "README has no python example"
    run_blocks(README)
    assert "falcon_9" in capsys.readouterr().out


@pytest.mark.parametrize(
    "page", [p for p in PAGES if p != README and python_blocks(p.read_text())], ids=page_id
)
def test_docs_python_examples_run(page, capsys):
    run_blocks(page)
    assert capsys.readouterr().out.strip(), f"{page_id(page)}'s examples printed nothing"


def test_docs_have_python_examples():
    """The pages whose examples the test above runs: at least the Python usage page and MATE's."""
    with_examples = {page_id(p) for p in PAGES if python_blocks(p.read_text())}
    assert {"README.md", "docs/python.md", "docs/mate.md"} <= with_examples


def test_readme_is_a_first_read():
    """The README stays short, with a runnable example near its top; the rest belongs in docs/."""
    lines = README.read_text().splitlines()
    assert len(lines) < 250
    assert "```python" in lines[:80]


def test_agent_config_examples_validate():
    """Every YAML block of the README and the docs made only of agent-config sections loads with
    load_config (an example with a misspelt or removed key fails here)."""
    import yaml

    from retlink.agent.config import RetlinkConfig, load_config

    blocks = [yaml.safe_load(b) for page in PAGES for b in yaml_blocks(page.read_text())]
    agent = [b for b in blocks if isinstance(b, dict) and set(b) <= set(RetlinkConfig.model_fields)]
    assert len(agent) >= 5  # search, kb, defences, the KB server and the replicas examples at least
    for block in agent:
        load_config(block)
    servers = [b for b in agent if "server" in b.get("kb", {})]
    assert servers and load_config(servers[0]).kb.server_name == "demo-kb"
    replicas = [b for b in agent if isinstance(b.get("reasoner", {}).get("llm", {}).get("base_url"), list)]
    assert replicas and len(load_config(replicas[0]).reasoner.llm.base_urls) == 2


def expand_braces(path: str) -> list[str]:
    """`eval/{a,b}.yaml` -> [`eval/a.yaml`, `eval/b.yaml`] (the shell's brace expansion)."""
    parts = re.split(r"\{([^{}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def cited_paths(markdown: str) -> list[str]:
    """The repository paths a page cites in backticks: `src/...`, `bench/x.py`, `agent/prompts.py`
    (relative to src/retlink). Placeholders (`<name>`, `NNNNN`) and globs are left out."""
    folders = "|".join(ROOT_FOLDERS + PACKAGE_FOLDERS)
    paths = []
    for token in re.findall(rf"`((?:{folders})/[^`\s]*)`", markdown):
        token = token.split(":")[0].rstrip(".,")
        if re.search(r"[<>*]|NNNNN|\.\.\.", token):
            continue
        paths.extend(expand_braces(token))
    return paths


def resolve(path: str) -> Path:
    root = REPO / path
    return root if path.split("/")[0] in ROOT_FOLDERS else REPO / "src" / "retlink" / path


def test_cited_paths_exist():
    """Every file or folder a page names exists, so a move (as to the src/ layout) cannot leave a
    stale path behind."""
    missing = [
        (page_id(page), path)
        for page in PAGES
        for path in cited_paths(page.read_text())
        if not resolve(path).exists()
    ]
    assert not missing


def test_cited_paths_catch_a_stale_one():
    """The check above can fail: a moved file is reported."""
    paths = cited_paths("see `eval/configs/{wikimel,nosuch}.yaml` and `src/retlink/agent/graph.py`")
    assert paths == ["eval/configs/wikimel.yaml", "eval/configs/nosuch.yaml", "src/retlink/agent/graph.py"]
    assert [p for p in paths if not resolve(p).exists()] == ["eval/configs/wikimel.yaml", "eval/configs/nosuch.yaml"]


def test_readme_links_resolve():
    """The README's relative links (to docs pages and images) point at files that exist; the
    docs pages' own links are checked by `mkdocs build --strict`."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert local and all((REPO / link).exists() for link in local), local


def test_nothing_cites_files_outside_the_repository():
    """Comments and docs stand alone: none cites the design or environment notes that lived beside
    the repository while it was written."""
    outside = re.compile("|".join([r"\bshared" + "/", r"\bDESIGN" + r"\.md", r"\bENVIRONMENT" + r"\.md"]))
    suffixes = {".py", ".md", ".sh", ".yaml", ".yml", ".toml", ".json", ".js", ".html", ".css"}
    files = [p for folder in ("src", "bench", "scripts", "tests", "docs") for p in (REPO / folder).rglob("*")]
    files += [README, REPO / "Makefile", REPO / "pyproject.toml", REPO / "mkdocs.yml", REPO / "langgraph.json"]
    hits = [
        str(p.relative_to(REPO))
        for p in files
        if p.is_file() and (p.suffix in suffixes or p.name == "Makefile") and outside.search(p.read_text(errors="replace"))
    ]
    assert not hits
