"""The MMD² window test: the statistic, its calibration, the per-account helper."""

from __future__ import annotations

import math

import numpy as np
import pytest

from antidistill.risk.detectors.mmd import (
    AccountMmdTester,
    MmdWindowDetector,
    median_heuristic_bandwidth,
    mmd2_unbiased,
    null_p_value,
    rbf_kernel_sum,
    rbf_self_sum,
    threshold_for_fpr,
)

DIM = 8


def sample(rng: np.random.Generator, n: int, shift: float = 0.0, dim: int = DIM) -> np.ndarray:
    """Unit-norm points (like sentence embeddings): a shifted Gaussian projected to the sphere."""
    x = rng.normal(size=(n, dim))
    x[:, 0] += 1.0 + shift
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def naive_mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    g = 1.0 / (2.0 * bandwidth**2)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = a.astype(np.float64), b.astype(np.float64)
        return np.exp(-g * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2.0 * k(x, y).mean()
    )


@pytest.mark.parametrize("max_block", [1, 50, 1 << 22])
def test_mmd2_matches_a_naive_float64_implementation_for_any_block_size(max_block: int) -> None:
    rng = np.random.default_rng(0)
    x, y = sample(rng, 37), sample(rng, 53, shift=0.5)
    got = mmd2_unbiased(x, y, 0.8, max_block=max_block)
    assert got == pytest.approx(naive_mmd2(x, y, 0.8), abs=1e-7)


def test_kernel_sums_are_consistent() -> None:
    rng = np.random.default_rng(1)
    x = sample(rng, 30)
    g = 0.7
    full = rbf_kernel_sum(x, x, g, max_block=64)
    assert rbf_self_sum(x, g, max_block=64) == pytest.approx(full - len(x), rel=1e-6)


def test_mmd2_is_symmetric() -> None:
    rng = np.random.default_rng(2)
    x, y = sample(rng, 40), sample(rng, 70, shift=0.3)
    assert mmd2_unbiased(x, y, 1.0) == pytest.approx(mmd2_unbiased(y, x, 1.0), rel=1e-6, abs=1e-12)


def test_mmd2_is_zero_in_expectation_for_one_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(3)
    same = np.array([mmd2_unbiased(sample(rng, 50), sample(rng, 50), 1.0) for _ in range(300)])
    # unbiased: the mean is 0 within 4 standard errors (and values go negative)
    se = same.std(ddof=1) / math.sqrt(len(same))
    assert abs(same.mean()) < 4 * se
    assert (same < 0).any()
    shifted = [mmd2_unbiased(sample(rng, 50), sample(rng, 50, shift=3.0), 1.0) for _ in range(20)]
    assert min(shifted) > same.mean() + 10 * same.std(ddof=1)
    assert min(shifted) > same.max()


def test_median_heuristic_on_known_points() -> None:
    # four points on a line at 0, 1, 2, 3: pairwise distances 1,1,1,2,2,3 -> median 1.5
    x = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    assert median_heuristic_bandwidth(x) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        median_heuristic_bandwidth(np.ones((5, 3)))


def test_threshold_is_the_conformal_order_statistic() -> None:
    null = np.arange(1.0, 100.0)  # 99 values 1..99
    # k = ceil(100 * 0.95) = 95 -> the 95th smallest value
    assert threshold_for_fpr(null, 0.05) == 95.0
    with pytest.raises(ValueError, match="need at least 999"):
        threshold_for_fpr(null, 0.001)
    assert null_p_value(null, 99.0) == pytest.approx(2 / 100)
    assert null_p_value(null, 1000.0) == pytest.approx(1 / 100)  # never 0
    assert null_p_value(null, -1.0) == 1.0


def test_calibrated_threshold_holds_the_target_fpr_on_fresh_benign_windows() -> None:
    """Realized FPR on fresh benign windows vs the target.

    With n_cal exchangeable null scores and threshold = the k-th smallest (k = ceil((n+1)(1-a))),
    the FPR conditional on calibration is Beta(n+1-k, k) distributed: mean (n+1-k)/(n+1) <= a,
    variance ~ a(1-a)/n_cal. Flags among n_test fresh windows are then Binomial(n_test, FPR), so
    the realized rate has variance ~ a(1-a)(1/n_cal + 1/n_test). We accept within 4 sd both ways.
    """
    rng = np.random.default_rng(4)
    target, window, n_cal, n_test = 0.05, 40, 2000, 2000
    det = MmdWindowDetector(sample(rng, 400), window=window)
    pool = sample(rng, 200_000)  # large: calibration windows barely overlap
    det.calibrate(pool, target_fpr=target, n_windows=n_cal, rng=rng)
    flags = sum(det.test(sample(rng, window)).flagged for _ in range(n_test))
    realized = flags / n_test
    k = math.ceil((n_cal + 1) * (1 - target))
    expected = (n_cal + 1 - k) / (n_cal + 1)
    sd = math.sqrt(target * (1 - target) * (1 / n_cal + 1 / n_test))
    assert abs(realized - expected) <= 4 * sd, (realized, expected, sd)


def test_window_detector_flags_shifted_windows_and_reports_p_values() -> None:
    rng = np.random.default_rng(5)
    det, held_out = MmdWindowDetector.from_benign(sample(rng, 3000), reference_size=1000, rng=rng, window=100)
    threshold = det.calibrate(held_out, target_fpr=0.01, n_windows=300, rng=rng)
    assert det.threshold == threshold and det.null_scores is not None
    attack = det.test(sample(rng, 100, shift=1.0))
    assert attack.flagged and attack.p_value == pytest.approx(1 / 301)
    assert "above" in attack.reason
    benign = det.test(sample(rng, 100))
    assert 0.0 < benign.p_value <= 1.0
    # a 25% share of one narrow topic (attacker prompts near one direction) is caught
    topic = rng.normal(scale=0.2, size=(25, DIM))
    topic[:, 2] += 1.0
    topic /= np.linalg.norm(topic, axis=1, keepdims=True)
    assert det.test(np.vstack([sample(rng, 75), topic])).flagged


def test_nothing_is_modified_in_place() -> None:
    rng = np.random.default_rng(6)
    ref, pool, win = sample(rng, 200), sample(rng, 2000), sample(rng, 50, shift=0.4)
    ref64 = ref.astype(np.float64)  # also a non-float32 input (converted, not written)
    copies = [a.copy() for a in (ref, pool, win, ref64)]
    det = MmdWindowDetector(ref64, window=50)
    det.calibrate(pool, n_windows=50, target_fpr=0.05, rng=rng)
    det.score(win)
    det.p_value(win)
    mmd2_unbiased(win, ref, 1.0, max_block=7)
    MmdWindowDetector.from_benign(pool, reference_size=100, rng=rng)
    AccountMmdTester(det, pool, target_fpr=0.05, n_windows=40, max_n=32).test(win)
    for before, after in zip(copies, (ref, pool, win, ref64), strict=True):
        np.testing.assert_array_equal(before, after)
    assert not det.reference.flags.writeable


def test_errors_are_clear() -> None:
    rng = np.random.default_rng(7)
    det = MmdWindowDetector(sample(rng, 50), window=10)
    with pytest.raises(RuntimeError, match="calibrate"):
        det.test(sample(rng, 10))
    with pytest.raises(ValueError, match="dim"):
        det.score(sample(rng, 10, dim=DIM + 1))
    det.calibrate(sample(rng, 500), n_windows=50, target_fpr=0.05, rng=rng)
    with pytest.raises(ValueError, match="calibrated for windows of 10"):
        det.test(sample(rng, 11))
    with pytest.raises(ValueError, match="NaN"):
        det.score(np.full((10, DIM), np.nan))
    with pytest.raises(ValueError):
        mmd2_unbiased(sample(rng, 1), sample(rng, 5), 1.0)


def test_account_tester_buckets_and_caches() -> None:
    rng = np.random.default_rng(8)
    det = MmdWindowDetector(sample(rng, 500), window=64)
    tester = AccountMmdTester(det, sample(rng, 5000), target_fpr=0.05, n_windows=100, seed=3, max_n=256)
    assert tester.buckets == (8, 16, 32, 64, 128, 256)
    assert tester.bucket_for(7) is None and tester.bucket_for(8) == 8
    assert tester.bucket_for(100) == 64 and tester.bucket_for(10_000) == 256
    assert tester.test(sample(rng, 7)) is None

    result = tester.test(sample(rng, 300, shift=1.0))
    assert result is not None and result.flagged and result.window == 256 and result.n == 256
    t16, null16 = tester.calibration(16)
    assert tester.calibration(16)[0] == t16 and len(null16) == 100
    # the same seed gives the same thresholds whatever order buckets are asked in
    other = AccountMmdTester(det, tester.benign, target_fpr=0.05, n_windows=100, seed=3, max_n=256)
    assert other.calibration(16)[0] == t16
    # smaller windows are noisier, so their thresholds are higher
    assert t16 > tester.calibration(128)[0]


def test_account_tester_caps_buckets_by_the_benign_pool() -> None:
    rng = np.random.default_rng(9)
    det = MmdWindowDetector(sample(rng, 100), window=16)
    tester = AccountMmdTester(det, sample(rng, 100), max_n=2048)
    assert tester.buckets == (8, 16, 32)
    with pytest.raises(ValueError, match="too small"):
        AccountMmdTester(det, sample(rng, 10))
