"""What a cold start imports (issue 20): modules only some paths need are imported by those paths.

Each check runs in a fresh interpreter, so modules that other tests of this session imported do
not count.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: imported by the scraper's page extraction (trafilatura and its date parser), which a link
#: extracts no page with does not run
LAZY = ("trafilatura", "htmldate")


def _imported_after(code: str) -> set[str]:
    """Which of LAZY a fresh interpreter has imported after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {LAZY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_the_link_path_leaves_page_extraction_unimported():
    """A whole link on the demo with search (the default without its shipped head, which skips
    search; the search reads the local corpus, so no page is fetched or extracted): every
    component built, the graph run, and trafilatura never imported."""
    assert _imported_after(
        "from retlink import Linker\n"
        "from retlink.agent.config import load_config\n"
        "cfg = load_config()\n"
        "linker = Linker.from_config(cfg.model_copy(update={'decision': cfg.decision.model_copy(update={'head': None})}))\n"
        "r = linker.link('src/retlink/data/demo/images/coffee.jpg', 'Java', 'A fresh cup of [Java] on the saucer.')\n"
        "assert any(t.node == 'search' and not t.skipped for t in r.trace), r.trace\n"
    ) == set()


def test_extracting_a_page_imports_trafilatura():
    """The import moved into `extract_page`, which still extracts."""
    body = b"<html><head><title>T</title></head><body><article><p>" + b"Real text here. " * 40 + b"</p></article></body></html>"
    assert "trafilatura" in _imported_after(
        "from retlink.tools.scrape.extract import extract_page\n"
        "from retlink.tools.scrape.fetch import RawPage\n"
        f"raw = RawPage('https://example.org/a', 'https://example.org/a', 200, 'text/html', None, {body!r})\n"
        "page = extract_page(raw)\n"
        "assert page is not None and 'Real text here.' in page.text, page\n"
    )
