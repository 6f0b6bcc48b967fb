"""In-process limiter: the single-node default, and the fallback of RedisLimiter during an outage.

Thread- and asyncio-safe: every decision is one short critical section under a ``threading.Lock``
(no await inside), so concurrent tasks or threads can never both take the last unit.

Memory is bounded. Subjects sit in LRU order; a subject whose budgets have fully drained is
indistinguishable from one never seen, so it is dropped (each operation checks the two least recently
used subjects; ``sweep()`` checks all). Past ``max_subjects`` the least recently used subject is
dropped even if not drained: it forgets that subject's usage (errs toward admitting), counted in
``stats()["evicted_active"]``. Time is the injected clock's ``monotonic()`` (immune to wall-clock jumps).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from antidistill.clock import Clock, SystemClock
from antidistill.limits import bucket
from antidistill.limits.headers import rate_limit_headers
from antidistill.limits.types import LimitSpec, Reservation, Source, check_subject, check_tokens


@dataclass(slots=True)
class _Usage:
    requests: float  # used, not yet drained
    tokens: float
    at: float  # monotonic time ``requests``/``tokens`` were brought up to date
    idle_at: float  # monotonic time both have drained to 0


class LocalLimiter:
    """``Limiter`` in one process. ``share`` (0 < share <= 1) enforces that fraction of every limit
    (used by RedisLimiter's fallback: ``1 / expected_replicas``); headers still show the full limit."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        max_subjects: int = 100_000,
        share: float = 1.0,
        source: Source = "local",
    ) -> None:
        if max_subjects < 1:
            raise ValueError("max_subjects must be >= 1")
        if not 0.0 < share <= 1.0:
            raise ValueError("share must be in (0, 1]")
        self._clock = clock or SystemClock()
        self._max = max_subjects
        self._share = share
        self._source: Source = source
        self._lock = threading.Lock()
        self._usage: OrderedDict[str, _Usage] = OrderedDict()
        self._evicted_idle = 0
        self._evicted_active = 0

    # the Limiter protocol ---------------------------------------------------------------------
    async def reserve(self, subject: str, limits: LimitSpec, tokens: int) -> Reservation:
        return self.reserve_sync(subject, limits, tokens)

    async def settle(self, reservation: Reservation, actual_tokens: int) -> int:
        return self.settle_sync(reservation, actual_tokens)

    async def cancel(self, reservation: Reservation) -> None:
        self.cancel_sync(reservation)

    def headers(self, reservation: Reservation) -> dict[str, str]:
        return rate_limit_headers(reservation)

    async def aclose(self) -> None:
        with self._lock:
            self._usage.clear()

    # synchronous core (usable from threads) ---------------------------------------------------
    def reserve_sync(self, subject: str, limits: LimitSpec, tokens: int) -> Reservation:
        check_subject(subject)
        check_tokens(tokens)
        if limits.unlimited:
            return bucket.unlimited(subject, limits, tokens)
        with self._lock:
            now = self._clock.monotonic()
            used_r, used_k = self._drained(subject, limits, now)
            allowed, reason, retry = bucket.verdict(limits, used_r, used_k, tokens, self._share)
            if allowed:
                used_r += 1.0 if limits.rpm is not None else 0.0
                used_k += tokens if limits.tpm is not None else 0.0
                self._store(subject, limits, used_r, used_k, now)
            self._sweep_some(now)
        return bucket.reservation(
            subject,
            limits,
            tokens,
            used_r,
            used_k,
            allowed=allowed,
            reason=reason,
            retry_after_s=retry,
            share=self._share,
            source=self._source,
        )

    def settle_sync(self, reservation: Reservation, actual_tokens: int) -> int:
        check_tokens(actual_tokens, "actual_tokens")
        with self._lock:
            if not reservation.allowed or not reservation._ticket.claim() or reservation.limits.tpm is None:
                return 0
            delta = actual_tokens - reservation.tokens
            if delta:
                self._adjust_locked(reservation.subject, reservation.limits, 0, delta)
        return delta

    def cancel_sync(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation.allowed and reservation._ticket.claim():
                self._adjust_locked(reservation.subject, reservation.limits, -1, -reservation.tokens)

    def adjust(self, subject: str, limits: LimitSpec, d_requests: int, d_tokens: int) -> None:
        """Add (or, negative, give back) usage without a limit check; usage never goes below 0."""
        with self._lock:
            self._adjust_locked(subject, limits, d_requests, d_tokens)

    # housekeeping -----------------------------------------------------------------------------
    def sweep(self) -> int:
        """Drop every fully drained subject now; returns how many were dropped."""
        with self._lock:
            now = self._clock.monotonic()
            idle = [s for s, u in self._usage.items() if u.idle_at <= now]
            for s in idle:
                del self._usage[s]
            self._evicted_idle += len(idle)
            return len(idle)

    def __len__(self) -> int:
        return len(self._usage)

    def stats(self) -> dict[str, int]:
        return {
            "subjects": len(self._usage),
            "evicted_idle": self._evicted_idle,
            "evicted_active": self._evicted_active,
        }

    # internals (call with the lock held) ------------------------------------------------------
    def _drained(self, subject: str, spec: LimitSpec, now: float) -> tuple[float, float]:
        u = self._usage.get(subject)
        if u is None:
            return 0.0, 0.0
        elapsed, share, period = now - u.at, self._share, spec.period_s
        used_r = 0.0 if spec.rpm is None else bucket.drained(u.requests, elapsed, spec.rpm * share, period)
        used_k = 0.0 if spec.tpm is None else bucket.drained(u.tokens, elapsed, spec.tpm * share, period)
        return used_r, used_k

    def _store(self, subject: str, spec: LimitSpec, used_r: float, used_k: float, now: float) -> None:
        drain = 0.0
        if spec.rpm is not None:
            drain = bucket.seconds_to_empty(used_r, spec.rpm * self._share, spec.period_s)
        if spec.tpm is not None:
            drain = max(drain, bucket.seconds_to_empty(used_k, spec.tpm * self._share, spec.period_s))
        if drain <= 0.0:
            self._usage.pop(subject, None)
            return
        u = self._usage.get(subject)
        if u is None:
            self._usage[subject] = _Usage(used_r, used_k, now, now + drain)
            while len(self._usage) > self._max:
                _, old = self._usage.popitem(last=False)
                if old.idle_at <= now:
                    self._evicted_idle += 1
                else:
                    self._evicted_active += 1
        else:
            u.requests, u.tokens, u.at, u.idle_at = used_r, used_k, now, now + drain
            self._usage.move_to_end(subject)

    def _adjust_locked(self, subject: str, spec: LimitSpec, d_requests: int, d_tokens: int) -> None:
        now = self._clock.monotonic()
        used_r, used_k = self._drained(subject, spec, now)
        used_r = max(0.0, used_r + d_requests) if spec.rpm is not None else 0.0
        used_k = max(0.0, used_k + d_tokens) if spec.tpm is not None else 0.0
        self._store(subject, spec, used_r, used_k, now)

    def _sweep_some(self, now: float) -> None:
        for _ in range(2):
            if not self._usage:
                return
            subject, u = next(iter(self._usage.items()))
            if u.idle_at > now:
                return
            del self._usage[subject]
            self._evicted_idle += 1
