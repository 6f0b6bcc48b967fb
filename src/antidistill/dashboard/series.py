"""Time ranges of the dashboard's charts, and a cache of settled event counts.

Counting the events of 30 days on 10M rows costs seconds even through an index, so the overview keeps
the counts of *settled* buckets (ended more than ``SETTLE_S`` ago: the event writer and spill replay
have delivered them) in memory, per process, and counts only the buckets it has not seen yet or that
are still filling. The first view of a range pays once (the first overview starts a background
thread that counts the 7-day and 30-day ranges ahead of their first view); later views count the
last bucket or two.
An event that arrives later than ``SETTLE_S`` (a spill replayed after a long outage) is not in an
already cached bucket until the process restarts.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Protocol

RANGES: dict[str, tuple[float, float]] = {  # name -> (span, bucket) in seconds
    "24h": (86400.0, 3600.0),
    "7d": (7 * 86400.0, 6 * 3600.0),
    "30d": (30 * 86400.0, 86400.0),
}
DEFAULT_RANGE = "24h"
SETTLE_S = 300.0
log = logging.getLogger("antidistill.dashboard")


class _CountingStore(Protocol):
    def event_counts(
        self, since: float, until: float, bucket_s: float, account_id: str | None = None
    ) -> list[tuple[float, int]]: ...


class SettledCounts:
    """Per bucket size: the counts of a contiguous, settled run of buckets ``[lo, hi)``."""

    def __init__(self, settle_s: float = SETTLE_S) -> None:
        self.settle_s = settle_s
        self._known: dict[float, dict[float, int]] = {}
        self._covered: dict[float, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._turns: dict[float, threading.Lock] = {}
        self.queries = 0  # how many ranges were counted in the store (tests, benchmark)

    def event_counts(
        self, store: _CountingStore, since: float, until: float, bucket_s: float, now: float
    ) -> dict[float, int]:
        """Events per bucket of [since, until) (non-empty buckets). Callers of one bucket size take
        turns, so a page that arrives while the same range is being counted waits and then reads
        the cache instead of counting again."""
        with self._lock:
            turn = self._turns.setdefault(bucket_s, threading.Lock())
        with turn:
            return self._event_counts(store, since, until, bucket_s, now)

    def warm(self, store: _CountingStore, now: float, ranges: tuple[str, ...] = ("7d", "30d")) -> None:
        """Count the settled buckets of ``ranges`` ahead of their first view (a background thread
        started on the first overview); failures only leave the cache cold."""
        for key in ranges:
            span, bucket = RANGES[key]
            try:
                self.event_counts(store, now - span, now, bucket, now)
            except Exception:
                log.warning("dashboard: could not pre-count the %s range", key, exc_info=True)

    def _event_counts(
        self, store: _CountingStore, since: float, until: float, bucket_s: float, now: float
    ) -> dict[float, int]:
        since = math.floor(since / bucket_s) * bucket_s
        settled_end = math.floor((now - self.settle_s) / bucket_s) * bucket_s
        with self._lock:
            known = dict(self._known.get(bucket_s, {}))
            covered = self._covered.get(bucket_s)
        if covered is None:
            parts = [(since, until)]
        else:
            lo, hi = covered
            parts = [(a, b) for a, b in ((since, min(lo, until)), (max(hi, since), until)) if b > a]
        fresh: dict[float, int] = {}
        for a, b in parts:
            self.queries += 1
            fresh.update(store.event_counts(a, b, bucket_s))
        settled = {t: n for t, n in fresh.items() if t < settled_end}
        with self._lock:
            table = self._known.setdefault(bucket_s, {})
            table.update(settled)
            new_lo = since if covered is None else min(covered[0], since)
            new_hi = min(until, settled_end) if covered is None else max(covered[1], min(until, settled_end))
            if new_hi > new_lo:
                self._covered[bucket_s] = (new_lo, new_hi)
        out = {t: n for t, n in known.items() if since <= t < until}
        out.update(fresh)
        return out
