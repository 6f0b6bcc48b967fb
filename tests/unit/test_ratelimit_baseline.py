"""The per-account rate-limit baseline: rolling counts, first flag, calibration on benign accounts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from antidistill.risk.detectors.ratelimit import (
    DAY,
    HOUR,
    RateLimitBaseline,
    RateLimitRule,
    calibrate_threshold,
    first_exceedance,
    max_rolling_count,
    rolling_counts,
)


def brute_max(ts: np.ndarray, w: float) -> int:
    return max((int(np.sum((ts > t - w) & (ts <= t))) for t in ts), default=0)


def benign_account(rng: np.random.Generator, days: int = 7) -> np.ndarray:
    """A human-like account: a few active sessions a day, each a short burst of requests."""
    times: list[float] = []
    for d in range(days):
        for _ in range(rng.poisson(2)):
            start = d * DAY + rng.uniform(8, 22) * HOUR
            n = 1 + rng.poisson(rng.uniform(2, 15))
            times.extend(start + np.cumsum(rng.exponential(60.0, size=n)))
    return np.sort(np.asarray(times))


def test_rolling_counts_by_hand() -> None:
    ts = [0.0, 10.0, 10.0, 3600.0, 3605.0, 7300.0]
    # window (t - 3600, t]: at 3600 the request at 0 has just left
    assert rolling_counts(ts, HOUR).tolist() == [1, 2, 3, 3, 4, 1]
    assert max_rolling_count(ts, HOUR) == 4
    assert max_rolling_count([], HOUR) == 0
    assert rolling_counts([], HOUR).tolist() == []


def test_max_rolling_count_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        ts = np.sort(rng.integers(0, 20_000, size=rng.integers(1, 200)).astype(float))
        for w in (60.0, HOUR, 5000.0):
            assert max_rolling_count(ts, w) == brute_max(ts, w)


def test_first_exceedance_gives_index_and_time() -> None:
    ts = np.arange(0.0, 1000.0, 10.0)  # one request every 10 s
    # 60 s window holds 6 requests at steady state; the limit of 5 is first exceeded at index 5
    assert first_exceedance(ts, 60.0, 5) == (5, 50.0)
    assert first_exceedance(ts, 60.0, 6) is None


def test_bad_timestamps_are_rejected() -> None:
    with pytest.raises(ValueError, match="sorted"):
        rolling_counts([3.0, 1.0], HOUR)
    with pytest.raises(ValueError, match="NaN"):
        rolling_counts([1.0, float("nan")], HOUR)
    with pytest.raises(ValueError):
        rolling_counts([1.0], 0.0)


def test_calibrate_threshold_is_the_conformal_quantile() -> None:
    counts = list(range(1, 100))  # 99 accounts
    assert calibrate_threshold(counts, 0.05) == 95  # k = ceil(100 * 0.95) = 95
    assert sum(c > 95 for c in counts) / len(counts) <= 0.05
    with pytest.raises(ValueError, match="need at least 999"):
        calibrate_threshold(counts, 0.001)
    with pytest.raises(ValueError):
        calibrate_threshold(counts, 0.0)


def test_calibrated_baseline_holds_its_fpr_on_fresh_benign_accounts() -> None:
    """Integer counts tie, which only lowers the FPR; bound above by the binomial (4 sd)."""
    rng = np.random.default_rng(1)
    target, n_cal, n_test = 0.05, 1000, 2000
    baseline = RateLimitBaseline.calibrate([benign_account(rng) for _ in range(n_cal)], target)
    assert [r.window_s for r in baseline.rules] == [HOUR, DAY]
    realized = np.mean([baseline.evaluate(benign_account(rng)).flagged for _ in range(n_test)])
    sd = math.sqrt(target * (1 - target) * (1 / n_cal + 1 / n_test))
    assert realized <= target + 4 * sd
    assert realized > 0.0  # not trivially conservative


def test_high_volume_account_is_flagged_with_first_flag_time() -> None:
    rng = np.random.default_rng(2)
    baseline = RateLimitBaseline.calibrate([benign_account(rng) for _ in range(500)], 0.01)
    attacker = np.arange(0.0, DAY, 5.0)  # one request every 5 s for a day
    verdict = baseline.evaluate(attacker)
    assert verdict.flagged and verdict.rule is not None
    assert verdict.rule.window_s == HOUR  # the hourly limit fires first
    assert verdict.first_flag_index == verdict.rule.threshold
    assert verdict.first_flag_ts == attacker[verdict.rule.threshold]
    assert verdict.requests == len(attacker)
    assert "1 h" in verdict.reasons[0]


def test_low_and_slow_accounts_pass_under_the_limit() -> None:
    """The documented weakness: ~667 requests per account spread over two weeks stay under a limit
    calibrated on benign accounts (a hydra campaign splits its volume this way)."""
    rng = np.random.default_rng(3)
    baseline = RateLimitBaseline.calibrate([benign_account(rng) for _ in range(500)], 0.01)
    slow = np.sort(rng.uniform(0, 14 * DAY, size=667))
    verdict = baseline.evaluate(slow)
    assert not verdict.flagged and verdict.first_flag_ts is None and verdict.reasons == ()


def test_explicit_rules_and_empty_accounts() -> None:
    baseline = RateLimitBaseline((RateLimitRule(DAY, 3),))
    assert baseline.evaluate([]).flagged is False
    v = baseline.evaluate([1.0, 2.0, 3.0, 4.0])
    assert v.flagged and v.first_flag_index == 3 and v.max_counts == ((DAY, 4),)
    assert RateLimitRule(DAY, 3).label == "1 d" and RateLimitRule(2 * HOUR, 1).label == "2 h"
