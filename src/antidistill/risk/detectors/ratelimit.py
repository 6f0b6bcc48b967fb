"""The simple baseline: a per-account rate limit, calibrated on benign accounts.

An account is flagged as soon as its requests in some rolling window (24 h and/or 1 h) exceed that
window's threshold. Each threshold is a high quantile of benign accounts' maximum rolling counts,
chosen so that a new benign account is flagged with probability at most the target FPR (split
evenly across the windows, so the union stays within the target). Pure functions over sorted
epoch-second timestamp arrays; no I/O, no clock, no globals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HOUR = 3600.0
DAY = 86400.0


def _timestamps(ts: np.ndarray | Sequence[float]) -> np.ndarray:
    a = np.asarray(ts, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"timestamps must be 1-D, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("timestamps contain NaN or inf")
    if a.size > 1 and np.any(np.diff(a) < 0):
        raise ValueError("timestamps must be sorted ascending")
    return a


def rolling_counts(ts: np.ndarray | Sequence[float], window_s: float) -> np.ndarray:
    """For each request i: how many requests fall in the window ``(ts[i] - window_s, ts[i]]``
    up to and including i (so a burst of identical timestamps counts 1, 2, 3, ...)."""
    if not window_s > 0:
        raise ValueError("window_s must be > 0")
    a = _timestamps(ts)
    starts = np.searchsorted(a, a - window_s, side="right")
    counts: np.ndarray = np.arange(1, a.size + 1, dtype=np.int64) - starts
    return counts


def max_rolling_count(ts: np.ndarray | Sequence[float], window_s: float) -> int:
    """The largest number of requests in any rolling window of ``window_s`` seconds (0 if none)."""
    counts = rolling_counts(ts, window_s)
    return int(counts.max()) if counts.size else 0


def first_exceedance(
    ts: np.ndarray | Sequence[float], window_s: float, threshold: int
) -> tuple[int, float] | None:
    """(index, time) of the first request that makes a rolling window hold more than
    ``threshold`` requests, or None. The index is also the number of requests served before it."""
    a = _timestamps(ts)
    hits = np.flatnonzero(rolling_counts(a, window_s) > threshold)
    if hits.size == 0:
        return None
    i = int(hits[0])
    return i, float(a[i])


def calibrate_threshold(benign_max_counts: Sequence[int] | np.ndarray, target_fpr: float) -> int:
    """Threshold t (flag when count > t) from benign accounts' max rolling counts: the k-th smallest
    of n with k = ceil((n + 1)(1 - target_fpr)), i.e. the (1 - FPR) quantile with the finite-sample
    correction that bounds a new benign account's flag probability by ``target_fpr``. Ties (integer
    counts) only make it more conservative."""
    if not 0.0 < target_fpr < 1.0:
        raise ValueError("target_fpr must be in (0, 1)")
    s = np.sort(np.asarray(benign_max_counts, dtype=np.int64))
    n = s.size
    k = math.ceil((n + 1) * (1.0 - target_fpr))
    if k > n:
        need = math.ceil(1.0 / target_fpr) - 1
        raise ValueError(f"{n} benign accounts cannot certify FPR {target_fpr:g}: need at least {need}")
    return int(s[k - 1])


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    window_s: float
    threshold: int  # flag when more than this many requests fall in one window

    @property
    def label(self) -> str:
        w = self.window_s
        return f"{w / DAY:g} d" if w >= DAY and w % DAY == 0 else f"{w / HOUR:g} h"


@dataclass(frozen=True, slots=True)
class RateLimitVerdict:
    """One account under the rate-limit baseline."""

    flagged: bool
    first_flag_ts: float | None  # time of the first request over a limit
    first_flag_index: int | None  # requests served before that one
    rule: RateLimitRule | None  # the rule that fired first
    max_counts: tuple[tuple[float, int], ...]  # (window_s, max rolling count) per rule
    requests: int

    @property
    def reasons(self) -> tuple[str, ...]:
        if self.rule is None:
            return ()
        peak = dict(self.max_counts)[self.rule.window_s]
        return (
            f"more than {self.rule.threshold} requests in {self.rule.label} "
            f"(peak {peak}; first exceeded after {self.first_flag_index} requests)",
        )


@dataclass(frozen=True, slots=True)
class RateLimitBaseline:
    """Per-account rolling-window limits. Build with ``calibrate`` or from explicit rules."""

    rules: tuple[RateLimitRule, ...]
    target_fpr: float | None = None

    @classmethod
    def calibrate(
        cls,
        benign_accounts: Sequence[np.ndarray | Sequence[float]],
        target_fpr: float,
        windows_s: Sequence[float] = (HOUR, DAY),
    ) -> RateLimitBaseline:
        """One threshold per window, each at ``target_fpr / len(windows_s)`` (union bound)."""
        if not windows_s:
            raise ValueError("need at least one window")
        per_rule = target_fpr / len(windows_s)
        rules = tuple(
            RateLimitRule(
                float(w), calibrate_threshold([max_rolling_count(ts, w) for ts in benign_accounts], per_rule)
            )
            for w in windows_s
        )
        return cls(rules, target_fpr)

    def evaluate(self, ts: np.ndarray | Sequence[float]) -> RateLimitVerdict:
        a = _timestamps(ts)
        first: tuple[int, float, RateLimitRule] | None = None
        peaks: list[tuple[float, int]] = []
        for rule in self.rules:
            counts = rolling_counts(a, rule.window_s)
            peaks.append((rule.window_s, int(counts.max()) if counts.size else 0))
            hits = np.flatnonzero(counts > rule.threshold)
            if hits.size and (first is None or int(hits[0]) < first[0]):
                first = (int(hits[0]), float(a[hits[0]]), rule)
        return RateLimitVerdict(
            flagged=first is not None,
            first_flag_ts=first[1] if first else None,
            first_flag_index=first[0] if first else None,
            rule=first[2] if first else None,
            max_counts=tuple(peaks),
            requests=int(a.size),
        )
