"""The PRF: one definition on every path, uniform, independent across keys and windows, pinned."""

from __future__ import annotations

import numpy as np
from scipy import stats

from antidistill.watermark import derive_key
from antidistill.watermark.schemes import GumbelScheme, prf
from antidistill.watermark.schemes.sampling import Workspace

KEY = derive_key(bytes(range(32)), "account", "acct-1", 1)
RNG_SEED = 20240601
# Each statistical check below fails with probability <= 1e-4 when the PRF is uniform/independent
# (the threshold is the test's own significance level; seeds are fixed so runs are reproducible).
LEVEL = 1e-4


def test_pinned_values() -> None:
    # device-independent definition: these numbers must never change (old evidence depends on them)
    seed = prf.prf_seed(KEY.secret, "gumbel|h=4")
    assert seed == 8176400694026197960
    vals = prf.vocab_values(prf.window_state(seed, [1, 2, 3, 4]), 5)[0]
    np.testing.assert_array_equal(
        vals,
        [
            0.004315195241174297,
            0.31361523265103075,
            0.49846863350317927,
            0.026259232432888635,
            0.9405340085345982,
        ],
    )


def test_generation_and_detection_paths_agree() -> None:
    rng = np.random.default_rng(RNG_SEED)
    toks = rng.integers(0, 5000, 300)
    scheme = GumbelScheme(window=4)
    seed = scheme.seed(KEY)
    # detection path: chain over sliding (window, token) tuples
    det = prf.to_unit(prf.chain(np.array(seed, dtype=np.uint64), prf.sliding_mixes(toks, 5)))
    ws = Workspace(5000, seed)
    for i in range(4, 300, 37):
        window = toks[i - 4 : i]
        gen = ws.prf_values(list(window))  # generation fast path
        ref = prf.vocab_values(prf.window_state(seed, window), 5000)[0]  # batched path
        np.testing.assert_array_equal(gen, ref)
        assert gen[toks[i]] == det[i - 4]
    # the Python-int chain equals the numpy chain
    w = toks[:4]
    numpy_chain = prf.chain(np.array(seed, dtype=np.uint64), prf.token_mix(w[None]))
    assert prf.window_state(seed, w) == int(numpy_chain[0])
    np.testing.assert_array_equal(scheme.score(toks, KEY)[4:], -np.log(1 - det))


def test_uniformity_over_vocab_and_tuples() -> None:
    seed = prf.prf_seed(KEY.secret, "kgw|h=2")
    states = prf.chain(
        np.array(seed, dtype=np.uint64),
        prf.token_mix(np.random.default_rng(RNG_SEED).integers(0, 50_000, (20, 2))),
    )
    vals = prf.vocab_values(states, 50_000).ravel()  # 1M values: 20 windows x 50k candidates
    assert vals.min() > 0.0 and vals.max() < 1.0
    counts = np.bincount((vals * 1000).astype(np.int64), minlength=1000)
    assert stats.chisquare(counts).pvalue > LEVEL
    assert stats.kstest(vals[:200_000], "uniform").pvalue > LEVEL
    # every one of the 52 bits used is balanced: |mean - 1/2| within 5 standard errors (p ~ 6e-7 each)
    words = (vals * 2.0**52 - 0.5).astype(np.uint64)
    assert np.array_equal((words.astype(np.float64) + 0.5) / 2.0**52, vals)  # exact representation
    bits = (words[:, None] >> np.arange(52, dtype=np.uint64)) & np.uint64(1)
    assert np.abs(bits.mean(axis=0) - 0.5).max() < 5 * 0.5 / np.sqrt(vals.shape[0])


def test_independence_across_keys_windows_and_tokens() -> None:
    rng = np.random.default_rng(RNG_SEED)
    toks = rng.integers(0, 1000, 200_001)
    mixes = prf.sliding_mixes(toks, 5)
    other = derive_key(bytes(range(32)), "account", "acct-2", 1)
    a = prf.to_unit(prf.chain(np.array(prf.prf_seed(KEY.secret, "t"), dtype=np.uint64), mixes))
    b = prf.to_unit(prf.chain(np.array(prf.prf_seed(other.secret, "t"), dtype=np.uint64), mixes))
    c = prf.to_unit(prf.chain(np.array(prf.prf_seed(KEY.secret, "u"), dtype=np.uint64), mixes))  # other tag
    n = a.shape[0]
    # Pearson correlation of independent uniforms: sd 1/sqrt(n); 4.5 sd is a two-sided p of ~7e-6
    bound = 4.5 / np.sqrt(n)
    assert abs(np.corrcoef(a, b)[0, 1]) < bound and abs(np.corrcoef(a, c)[0, 1]) < bound
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < bound  # consecutive windows (sharing 4 of 5 tokens)
    # joint uniformity of (key A, key B) pairs on a 10x10 grid
    grid = np.bincount((a * 10).astype(int) * 10 + (b * 10).astype(int), minlength=100)
    assert stats.chisquare(grid).pvalue > LEVEL
    # neighbouring candidate tokens of one window
    row = prf.vocab_values(prf.window_state(prf.prf_seed(KEY.secret, "t"), [5, 6, 7, 8]), 200_000)[0]
    assert abs(np.corrcoef(row[:-1], row[1:])[0, 1]) < 4.5 / np.sqrt(row.shape[0])


def test_extreme_words_stay_strictly_inside_the_unit_interval() -> None:
    extremes = np.array([0, 1, (1 << 12) - 1, (1 << 64) - 1, (1 << 64) - (1 << 12)], dtype=np.uint64)
    u = prf.to_unit(extremes)
    assert (u > 0).all() and (u < 1).all() and np.isfinite(-np.log(1.0 - u)).all()


def test_window_order_matters_and_token_ids_are_checked() -> None:
    seed = prf.prf_seed(KEY.secret, "t")
    assert prf.window_state(seed, [1, 2]) != prf.window_state(seed, [2, 1])
    try:
        prf.token_mix(np.array([3, -1]))
    except ValueError:
        pass
    else:  # pragma: no cover
        raise AssertionError("negative ids must be rejected")
