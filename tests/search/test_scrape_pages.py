"""Extraction of real-world pages, the disk cache, URL normalisation and passage selection."""

from __future__ import annotations

import pytest

from retlink.tools.scrape import build_scraper
from retlink.tools.scrape.cache import PageCache
from retlink.tools.scrape.extract import Page
from retlink.tools.scrape.passages import content_hash, select_passages, split_passages
from retlink.tools.scrape.urls import normalise_url


async def test_extraction_keeps_the_article_and_drops_the_boilerplate(site, search_cfg) -> None:
    page = await build_scraper(search_cfg()).fetch(site.url("/article/chelsea-fc"))
    assert "Stamford Bridge" in page.text
    assert "royal blue" in page.text
    for junk in (
        "Accept all cookies",
        "Log in",
        "Donate",
        "Celebrity diets",
        "Privacy policy",
        "dataLayer",
        "querySelectorAll",
    ):
        assert junk not in page.text
    assert page.title.startswith("Chelsea F.C.")
    assert page.date == "2023-08-11"
    assert page.final_url == site.url("/article/chelsea-fc")


async def test_final_url_follows_redirects(site, search_cfg, servers) -> None:
    server = servers[0]
    server.routes.insert(0, ("/moved/eiffel", lambda h, p, q: h.redirect("/article/eiffel-tower", 301)))
    page = await build_scraper(search_cfg()).fetch(site.url("/moved/eiffel"))
    assert page.url == site.url("/moved/eiffel")
    assert page.final_url == site.url("/article/eiffel-tower")


async def test_disk_cache_serves_repeats_without_refetching(site, search_cfg, tmp_path) -> None:
    scraper = build_scraper(search_cfg(cache_dir=tmp_path, cache_ttl_s=3600))
    url = site.url("/article/eiffel-tower")
    before = site.server.hits["/article/eiffel-tower"]
    first = await scraper.fetch(url)
    second = await scraper.fetch(url + "?utm_source=newsletter#history")  # same page, other spelling
    assert second == first
    assert site.server.hits["/article/eiffel-tower"] == before + 1
    assert list(tmp_path.rglob("*.json"))


def test_cache_entries_expire_and_corrupt_entries_are_misses(tmp_path) -> None:
    now = [1000.0]
    cache = PageCache(tmp_path, ttl_s=60, clock=lambda: now[0])
    page = Page(url="https://a.example/x", final_url="https://a.example/x", title="t", text="body", date=None)
    cache.put(page.url, page)
    assert cache.get(page.url) == page
    now[0] += 61
    assert cache.get(page.url) is None
    now[0] -= 61
    next(tmp_path.rglob("*.json")).write_text("{not json", encoding="utf-8")
    assert cache.get(page.url) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("HTTP://Example.ORG:80/a/", "http://example.org/a"),
        ("https://example.org/a?b=2&a=1", "https://example.org/a?a=1&b=2"),
        ("https://example.org/a?utm_source=x&id=3&fbclid=y", "https://example.org/a?id=3"),
        ("https://example.org/a#section", "https://example.org/a"),
        ("https://example.org", "https://example.org/"),
    ],
)
def test_url_normalisation_merges_spellings_of_one_page(a: str, b: str) -> None:
    assert normalise_url(a) == normalise_url(b)


def test_url_normalisation_keeps_distinct_pages_apart() -> None:
    assert normalise_url("https://example.org/A") != normalise_url("https://example.org/a")
    assert normalise_url("https://example.org/a?id=1") != normalise_url("https://example.org/a?id=2")
    assert normalise_url("http://example.org/") != normalise_url("https://example.org/")


def test_content_hash_ignores_case_and_whitespace_only() -> None:
    assert content_hash("The  Eiffel\nTower") == content_hash("the eiffel tower ")
    assert content_hash("The Eiffel Tower") != content_hash("The Eiffel Towers")


def test_split_passages_respects_the_size_limit_at_sentence_boundaries() -> None:
    text = "Intro line.\n" + " ".join(f"Sentence number {i} talks about towers." for i in range(40))
    passages = split_passages(text, 200)
    assert all(len(p) <= 200 for p in passages)
    assert passages[0].startswith("Intro line.")
    assert all(p.endswith(".") for p in passages)
    assert "".join(passages).replace(" ", "") == text.replace("\n", "").replace(" ", "")


def test_select_passages_prefers_query_terms_and_fits_the_budget() -> None:
    noise = " ".join(f"Filler sentence {i} about nothing in particular." for i in range(30))
    doc_a = noise + "\nThe Eiffel Tower was designed by the company of Gustave Eiffel. " + noise
    doc_b = "Stamford Bridge is a football stadium. " + noise
    chosen = select_passages(
        [doc_a, doc_b], "Gustave Eiffel tower designer", max_chars=200, per_doc=2, max_tokens=100
    )
    assert any("Gustave Eiffel" in p for p in chosen[0])
    assert chosen[1], "every page gets its best passage before any page gets a second"
    assert sum(len(p) for ps in chosen for p in ps) <= 100 * 4
    assert all(len(ps) <= 2 for ps in chosen)
