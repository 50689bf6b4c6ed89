"""Safe fetching and extraction of web pages (see scraper.py for the entry points)."""

from retlink.tools.scrape.budget import Budget, BudgetSpec, new_budget_spec, resolve_budget
from retlink.tools.scrape.extract import Page
from retlink.tools.scrape.fetch import FetchError, FetchSettings
from retlink.tools.scrape.scraper import Scraper, build_scraper
from retlink.tools.scrape.untrusted import render_untrusted

__all__ = [
    "Budget",
    "BudgetSpec",
    "FetchError",
    "FetchSettings",
    "Page",
    "Scraper",
    "build_scraper",
    "new_budget_spec",
    "render_untrusted",
    "resolve_budget",
]
