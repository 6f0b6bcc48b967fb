"""A small circuit breaker for the Redis limiter (one event loop; no locks needed).

closed     every call goes to Redis. Failures (an error, a timeout, or a reply slower than the latency
           budget) open the circuit once there have been at least ``failure_threshold`` of them with
           no success in between, AND that run has lasted ``min_outage_s``. The second condition
           matters: one stall of the process (GC, CPU contention) slows every call in flight at
           once, and that is one event, not many. Without it, a loaded 2-CPU host flapped into
           local limits several times a minute at 1,000 ops/s. A real outage keeps failing and
           opens the circuit after about ``min_outage_s``.
open       no call goes to Redis for ``cooldown_s``; callers use their fallback at once.
half-open  after the cool-down, exactly one call (the probe) goes to Redis while the others keep using
           the fallback. The probe's success closes the circuit; its failure re-opens it for another
           cool-down. A probe that is cancelled before it has a verdict frees the slot for the next.
"""

from __future__ import annotations

import logging
from typing import Literal

from antidistill.clock import Clock

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        clock: Clock,
        *,
        failure_threshold: int = 3,
        min_outage_s: float = 0.2,
        cooldown_s: float = 5.0,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if min_outage_s < 0 or cooldown_s <= 0:
            raise ValueError("need min_outage_s >= 0 and cooldown_s > 0")
        self._clock = clock
        self._threshold = failure_threshold
        self._min_outage = min_outage_s
        self._cooldown = cooldown_s
        self._state: State = "closed"
        self._failures = 0
        self._first_failure_at = 0.0
        self._opened_at = 0.0
        self._probing = False
        self.opens = 0

    @property
    def state(self) -> State:
        if self._state == "open" and self._clock.monotonic() - self._opened_at >= self._cooldown:
            return "half_open"
        return self._state

    def acquire(self) -> tuple[bool, bool]:
        """(may call Redis, this call is the probe)."""
        if self._state == "closed":
            return True, False
        if self._state == "open":
            if self._clock.monotonic() - self._opened_at < self._cooldown:
                return False, False
            self._state = "half_open"
        if self._probing:
            return False, False
        self._probing = True
        return True, True

    def success(self, probe: bool) -> None:
        if probe:
            self._probing = False
            if self._state != "closed":
                log.warning("redis limiter: circuit closed, shared limits back in Redis")
            self._state, self._failures = "closed", 0
        elif self._state == "closed":
            self._failures = 0

    def failure(self, probe: bool, why: str) -> None:
        if probe:
            self._probing = False
            self._open(f"probe failed: {why}")
        elif self._state == "closed":
            now = self._clock.monotonic()
            if self._failures == 0:
                self._first_failure_at = now
            self._failures += 1
            if self._failures >= self._threshold and now - self._first_failure_at >= self._min_outage:
                self._open(why)

    def release(self, probe: bool) -> None:
        """A call ended without a verdict (cancelled)."""
        if probe:
            self._probing = False

    def _open(self, why: str) -> None:
        if self._state == "closed":
            log.warning("redis limiter: circuit open for %.1fs, using local limits (%s)", self._cooldown, why)
        self._state, self._failures, self._opened_at = "open", 0, self._clock.monotonic()
        self.opens += 1
