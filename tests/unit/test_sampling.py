"""DefaultSampler: greedy, nucleus, penalties, reproducibility, and the sampled distribution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from antidistill.backends.base import SamplingParams
from antidistill.backends.sampling import DefaultSampler, draw, nucleus, softmax

LOGITS = np.array([1.0, 2.5, 0.3, 2.4, -1.0, 0.0], dtype=np.float32)


def frozen(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.setflags(write=False)
    return a


def params(**kw: float | int | None) -> SamplingParams:
    return SamplingParams(max_tokens=16, **kw)  # type: ignore[arg-type]


def test_temperature_zero_is_argmax_and_ignores_randomness() -> None:
    rng_state = DefaultSampler(seed=1).rng.bit_generator.state
    s = DefaultSampler(seed=1)
    picks = {s.sample([], frozen(LOGITS), params(temperature=0.0)) for _ in range(20)}
    assert picks == {int(np.argmax(LOGITS))}
    assert s.rng.bit_generator.state == rng_state  # no draw was spent


def test_never_modifies_the_logits() -> None:
    logits = frozen(LOGITS)  # a write would raise
    before = logits.copy()
    s = DefaultSampler(seed=3)
    for p in (
        params(temperature=0.7, top_p=0.5, presence_penalty=1.0, frequency_penalty=0.5),
        params(temperature=0),
    ):
        s.sample([1, 1, 3], logits, p)
    np.testing.assert_array_equal(logits, before)


def test_small_top_p_keeps_only_the_top_token() -> None:
    for seed in range(50):
        assert DefaultSampler(seed=seed).sample([], frozen(LOGITS), params(temperature=5.0, top_p=0.01)) == 1


def test_same_seed_reproduces_and_other_seeds_differ() -> None:
    p = params(temperature=1.5, seed=42)

    def run(sampler: DefaultSampler) -> list[int]:
        return [sampler.sample([], frozen(LOGITS), p) for _ in range(64)]

    first = run(DefaultSampler.for_request(p))
    assert run(DefaultSampler.for_request(p)) == first
    assert run(DefaultSampler.for_request(p, index=1)) != first  # choice 1 of n has its own stream
    assert run(DefaultSampler.for_request(params(temperature=1.5, seed=43))) != first


def _expected_within_bounds(counts: np.ndarray, probs: np.ndarray, n: int, alpha: float = 1e-6) -> None:
    """Each count lies in its exact binomial (1 - alpha/K) interval: a correct sampler fails this test
    with probability below alpha (Bonferroni over the K tokens), and the seed is fixed anyway."""
    k = probs.size
    for i in range(k):
        lo, hi = binom.interval(1 - alpha / k, n, probs[i])
        assert lo <= counts[i] <= hi, (i, counts[i], n * probs[i], (lo, hi))


@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.0])
def test_frequencies_match_the_softmax(temperature: float) -> None:
    n = 20_000
    s = DefaultSampler(seed=1234)
    logits = frozen(LOGITS)
    p = params(temperature=temperature)
    counts = np.bincount([s.sample([], logits, p) for _ in range(n)], minlength=LOGITS.size)
    _expected_within_bounds(counts, softmax(LOGITS.astype(np.float64) / temperature), n)


def test_frequencies_match_the_renormalized_nucleus() -> None:
    n = 20_000
    probs = softmax(LOGITS.astype(np.float64))
    order = np.argsort(-probs)
    top_p = float(probs[order[:3]].sum()) - 1e-3  # the nucleus is exactly the 3 most likely tokens
    s = DefaultSampler(seed=99)
    counts = np.bincount([s.sample([], frozen(LOGITS), params(top_p=top_p)) for _ in range(n)], minlength=6)
    assert set(np.flatnonzero(counts)) == set(order[:3].tolist())
    expected = np.zeros_like(probs)
    expected[order[:3]] = probs[order[:3]] / probs[order[:3]].sum()
    _expected_within_bounds(counts, expected, n)


def test_nucleus_on_a_large_vocabulary_matches_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=49_152) * 3)
    for top_p in (0.1, 0.5, 0.9, 0.999):
        got = nucleus(probs, top_p)
        order = np.argsort(-probs, kind="stable")
        k = int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1
        assert set(np.flatnonzero(got)) == set(order[:k].tolist())
        assert got.sum() == pytest.approx(1.0)


def test_penalties_count_generated_tokens_only() -> None:
    logits = frozen(np.array([2.0, 1.9, 0.0], dtype=np.float32))
    greedy = DefaultSampler(prompt_len=2)
    # token 0 appears twice in the prompt (not penalized) and once in the answer
    assert greedy.sample([0, 0, 0], logits, params(temperature=0, frequency_penalty=0.05)) == 0
    assert greedy.sample([0, 0, 0], logits, params(temperature=0, frequency_penalty=0.2)) == 1
    assert greedy.sample([0, 0, 0], logits, params(temperature=0, presence_penalty=0.2)) == 1
    # nothing generated yet: no penalty at all
    assert greedy.sample([0, 0], logits, params(temperature=0, presence_penalty=5.0)) == 0


def test_bad_logits_raise_and_masked_tokens_are_never_drawn() -> None:
    s = DefaultSampler(seed=0)
    with pytest.raises(ValueError):
        s.sample([], frozen(np.array([0.0, np.nan], dtype=np.float32)), params())
    with pytest.raises(ValueError):
        s.sample([], frozen(np.full(3, -np.inf, dtype=np.float32)), params())
    masked = frozen(np.array([-np.inf, 0.0, -np.inf, 0.5], dtype=np.float32))
    assert {s.sample([], masked, params(temperature=3.0)) for _ in range(200)} == {1, 3}


def test_draw_edges() -> None:
    probs = np.array([0.0, 0.25, 0.75, 0.0])
    assert draw(probs, 0.0) == 1
    assert draw(probs, 0.2499) == 1
    assert draw(probs, 0.25) == 2
    assert draw(probs, 0.9999999999) == 2
