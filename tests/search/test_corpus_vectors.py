"""The local corpus's vectors are kept on disk (issue 20: cold start), so a new process reads them
instead of embedding the corpus again; what cannot be read is recomputed. Real MiniLM."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from retlink.tools.search.local import LocalCorpusSearch


class CountingEmbedder:
    """The real embedder, with the texts it was asked to embed counted (a spy, not a fake)."""

    def __init__(self, embedder) -> None:
        self.embedder, self.name, self.dim, self.texts = embedder, embedder.name, embedder.dim, 0

    def embed(self, texts):
        self.texts += len(texts)
        return self.embedder.embed(texts)


@pytest.fixture(scope="module")
def minilm():
    from retlink.tools.kb.embedders import shared_text_embedder

    return shared_text_embedder()


def write_corpus(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


DOCS = [
    {"url": "http://127.0.0.1/seine", "title": "Seine", "text": "The Seine is a river flowing through Paris."},
    {"url": "http://127.0.0.1/loire", "title": "Loire", "text": "The Loire is the longest river in France."},
    {"url": "http://127.0.0.1/java", "title": "Java coffee", "text": "Java is coffee grown on the island of Java."},
]


def test_a_second_process_reads_the_vectors_instead_of_embedding(minilm, tmp_path):
    corpus, store = write_corpus(tmp_path / "corpus.jsonl", DOCS), tmp_path / "vectors"
    first_spy = CountingEmbedder(minilm)
    first = LocalCorpusSearch(corpus, first_spy, vectors_dir=store)
    assert first_spy.texts == 3 and len(list(store.glob("*.npy"))) == 1
    second_spy = CountingEmbedder(minilm)
    second = LocalCorpusSearch(corpus, second_spy, vectors_dir=store)
    assert second_spy.texts == 0
    np.testing.assert_array_equal(second._vectors, first._vectors)
    assert [h.url for h in second.search_sync("river in Paris", 2)] == [h.url for h in first.search_sync("river in Paris", 2)]
    assert second.search_sync("river in Paris", 1)[0].url.endswith("/seine")
    # another corpus text is another entry, embedded afresh
    edited = write_corpus(tmp_path / "corpus.jsonl", [*DOCS[:2], {**DOCS[2], "text": "Java is an island of Indonesia."}])
    third_spy = CountingEmbedder(minilm)
    LocalCorpusSearch(edited, third_spy, vectors_dir=store)
    assert third_spy.texts == 3 and len(list(store.glob("*.npy"))) == 2


def test_an_unreadable_entry_is_recomputed_and_replaced(minilm, tmp_path, caplog):
    corpus, store = write_corpus(tmp_path / "corpus.jsonl", DOCS), tmp_path / "vectors"
    good = LocalCorpusSearch(corpus, minilm, vectors_dir=store)._vectors
    (entry,) = store.glob("*.npy")
    for broken in (b"not an array", None):
        if broken is None:  # the right file format, the wrong shape
            np.save(entry, np.zeros((2, 384), dtype=np.float32))
        else:
            entry.write_bytes(broken)
        spy = CountingEmbedder(minilm)
        with caplog.at_level(logging.WARNING):
            again = LocalCorpusSearch(corpus, spy, vectors_dir=store)
        assert spy.texts == 3 and "embedding" in caplog.text
        np.testing.assert_allclose(again._vectors, good, atol=1e-6)
        np.testing.assert_allclose(np.load(entry), good, atol=1e-6)
        caplog.clear()


def test_a_cache_that_cannot_be_written_costs_time_not_the_backend(minilm, tmp_path, caplog):
    corpus = write_corpus(tmp_path / "corpus.jsonl", DOCS)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        search = LocalCorpusSearch(corpus, minilm, vectors_dir=blocked / "vectors")
    assert "could not store corpus vectors" in caplog.text
    assert search.search_sync("coffee island", 1)[0].url.endswith("/java")
