"""Turn a fetched body into clean text with trafilatura: main content, title, date, URL.

trafilatura drops navigation, footers, cookie banners and scripts, which is most of a modern
page; what is left is still untrusted text (see untrusted.py). It is CPU-bound (lxml), so the
scraper calls `extract_page` in a worker thread.

trafilatura is imported by the first extraction, not with this module: every link imports the
scrape package (the prompts render evidence with `untrusted.py`, the graph takes the budget
spec from it), while only a link that fetches a page extracts one, and importing trafilatura
(with htmldate and its date parsers) was a third of a second of every cold start.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from retlink.tools.scrape.fetch import RawPage

log = logging.getLogger(__name__)


@dataclass
class Page:
    """An extracted page: what becomes evidence (and what the cache stores)."""

    url: str
    final_url: str
    title: str
    text: str
    date: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Page:
        return cls(**{k: d.get(k) for k in ("url", "final_url", "title", "text", "date")})


def _decode(raw: RawPage) -> str:
    try:
        return raw.body.decode(raw.charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name from the server
        return raw.body.decode("utf-8", errors="replace")


def extract_page(raw: RawPage) -> Page | None:
    """Main text and metadata of a fetched page, or None when nothing readable is in it."""
    if raw.content_type == "text/plain":
        text = _decode(raw).strip()
        return Page(url=raw.url, final_url=raw.final_url, title="", text=text) if text else None
    # trafilatura detects the encoding of bytes itself (meta charset, then guessing); a declared
    # HTTP charset wins, so decode first when the server named one.
    html: str | bytes = _decode(raw) if raw.charset else raw.body
    # imported here, not at the top (see the module docstring), and outside the try: a missing
    # package is an error, not a page that failed to extract
    import trafilatura

    try:
        doc = trafilatura.bare_extraction(
            html,
            url=raw.final_url,
            with_metadata=True,
            include_comments=False,
            include_images=False,
            include_links=False,
            favor_precision=True,
        )
    except Exception as e:  # trafilatura and lxml raise a wide variety on hostile markup
        log.warning("extraction failed for %s: %s", raw.final_url, e)
        return None
    if doc is None or not (doc.text or "").strip():
        return None
    return Page(
        url=raw.url,
        final_url=raw.final_url,
        title=(doc.title or "").strip(),
        text=doc.text.strip(),
        date=doc.date or None,
    )
