"""Limits shared by all gateway replicas, kept in Redis by two atomic Lua scripts (``scripts.py``).

It never hangs and never raises on a Redis problem. Each Redis call is capped by ``timeout_s``
(``asyncio.timeout`` on top of socket timeouts; client retries are off). The cap includes waiting
for one of ``max_inflight`` slots, handed out first come, first served by a FIFO semaphore.
(redis-py's BlockingConnectionPool lets newcomers barge in; under load it starved some callers for
more than 5 s.) After an error or a timeout the local fallback decides that call at once. A reply
slower than ``latency_budget_s`` is still used. All three count as failures for the circuit breaker
(``breaker.py``). It opens when failures are sustained, and while it is open no call goes to Redis.

Outage semantics: while the circuit is open, each replica enforces its own share,
``1 / expected_replicas`` of every limit, in an in-process ``LocalLimiter``. So the global rate stays
about the configured limit as long as traffic is spread over the replicas. One replica
alone admits only its share, except that a request within the full limit is admitted when its local
bucket is empty. Usage taken in Redis before the outage is not known locally, and usage taken
locally is not copied to Redis when it comes back. So around each transition a subject can get up to
about one extra budget. Reservations remember where they were taken; ``settle``/``cancel`` go back
there. If Redis is unreachable at settle time, a charge goes to the local fallback and a refund is
dropped (the error favors the limit, not the client). A reserve that timed out may still have run
in Redis, so it is counted twice, which is again conservative.

Replicas must share ``prefix`` and the limits of a subject. Time comes from Redis ``TIME`` (one
clock, no skew between hosts) unless a ``clock`` is injected (tests), whose ``now()`` is sent instead.
Use one RedisLimiter per event loop (redis.asyncio clients are bound to one loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from antidistill.clock import Clock, SystemClock
from antidistill.limits import bucket
from antidistill.limits.breaker import CircuitBreaker, State
from antidistill.limits.headers import rate_limit_headers
from antidistill.limits.local import LocalLimiter
from antidistill.limits.scripts import ADJUST, RESERVE
from antidistill.limits.types import LimitSpec, Reservation, check_subject, check_tokens

log = logging.getLogger(__name__)


class RedisLimiter:
    """``Limiter`` shared across replicas through Redis, with a circuit breaker and local fallback."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "antidistill:rl",
        expected_replicas: int = 1,
        timeout_s: float = 0.05,
        latency_budget_s: float = 0.02,
        failure_threshold: int = 3,
        min_outage_s: float = 0.2,
        cooldown_s: float = 5.0,
        clock: Clock | None = None,
        max_local_subjects: int = 100_000,
        max_inflight: int = 64,
        owns_client: bool = False,
    ) -> None:
        if expected_replicas < 1:
            raise ValueError("expected_replicas must be >= 1")
        if not 0 < latency_budget_s <= timeout_s:
            raise ValueError("need 0 < latency_budget_s <= timeout_s")
        self._redis = client
        self._prefix = prefix
        self._timeout = timeout_s
        self._budget = latency_budget_s
        self._clock = clock
        self._owns_client = owns_client
        self._slots = asyncio.Semaphore(max_inflight)  # FIFO; never more calls than pool connections
        local_clock = clock or SystemClock()
        self.breaker = CircuitBreaker(
            local_clock, failure_threshold=failure_threshold, min_outage_s=min_outage_s, cooldown_s=cooldown_s
        )
        self.fallback = LocalLimiter(
            local_clock, max_subjects=max_local_subjects, share=1.0 / expected_replicas, source="fallback"
        )
        self._reserve = client.register_script(RESERVE)
        self._adjust = client.register_script(ADJUST)
        self._stats = {"redis_ok": 0, "redis_failed": 0, "redis_slow": 0, "fallback_decisions": 0}

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: float = 0.05, max_inflight: int = 64, **kwargs: Any
    ) -> RedisLimiter:
        """A limiter with its own client: socket timeouts = ``timeout_s``, no client-side retries,
        a pool as large as the limiter's ``max_inflight`` slots (so it never runs out)."""
        client = Redis.from_url(
            url,
            max_connections=max_inflight,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        return cls(client, timeout_s=timeout_s, max_inflight=max_inflight, owns_client=True, **kwargs)

    # the Limiter protocol ---------------------------------------------------------------------
    async def reserve(self, subject: str, limits: LimitSpec, tokens: int) -> Reservation:
        check_subject(subject)
        check_tokens(tokens)
        if limits.unlimited:
            return bucket.unlimited(subject, limits, tokens)
        reply = await self._call(lambda: self._reserve([self._key(subject)], [*self._args(limits), tokens]))
        if reply is None:
            self._stats["fallback_decisions"] += 1
            return self.fallback.reserve_sync(subject, limits, tokens)
        ok, used_r, used_k = int(reply[0]), float(reply[1]), float(reply[2])
        if ok:
            allowed, reason, retry = True, None, None
        else:
            allowed, reason, retry = bucket.verdict(limits, used_r, used_k, tokens, 1.0)
            if allowed:  # float edge: Lua said no, Python yes; Lua decided, so report a tiny wait
                allowed, reason, retry = False, "tokens" if limits.tpm else "requests", 0.001
        return bucket.reservation(
            subject,
            limits,
            tokens,
            used_r,
            used_k,
            allowed=allowed,
            reason=reason,
            retry_after_s=retry,
            share=1.0,
            source="redis",
        )

    async def settle(self, reservation: Reservation, actual_tokens: int) -> int:
        check_tokens(actual_tokens, "actual_tokens")
        if reservation.source == "fallback":
            return self.fallback.settle_sync(reservation, actual_tokens)
        if reservation.source != "redis" or reservation.limits.tpm is None:
            reservation._ticket.claim()
            return 0
        if not reservation.allowed or not reservation._ticket.claim():
            return 0
        delta = actual_tokens - reservation.tokens
        if delta:
            await self._give(reservation, 0, delta)
        return delta

    async def cancel(self, reservation: Reservation) -> None:
        if reservation.source == "fallback":
            self.fallback.cancel_sync(reservation)
        elif reservation.source == "redis" and reservation.allowed and reservation._ticket.claim():
            await self._give(reservation, -1, -reservation.tokens)

    def headers(self, reservation: Reservation) -> dict[str, str]:
        return rate_limit_headers(reservation)

    async def aclose(self) -> None:
        if self._owns_client:
            try:
                async with asyncio.timeout(1.0):
                    await self._redis.aclose()
            except Exception as e:  # closing a broken pool must not fail shutdown
                log.debug("redis limiter: close failed: %r", e)

    # observability ----------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self.breaker.state

    def stats(self) -> dict[str, int | str]:
        return {
            **self._stats,
            "breaker_opens": self.breaker.opens,
            "state": self.state,
            **{f"fallback_{k}": v for k, v in self.fallback.stats().items()},
        }

    # internals --------------------------------------------------------------------------------
    def _key(self, subject: str) -> str:
        return f"{self._prefix}:{subject}"

    def _args(self, spec: LimitSpec) -> list[str | int]:
        now = "" if self._clock is None else repr(round(self._clock.now() * 1e6))
        return [now, repr(spec.period_s * 1e6), spec.rpm or 0, spec.tpm or 0]

    async def _give(self, r: Reservation, d_requests: int, d_tokens: int) -> None:
        """Apply a correction in Redis; if Redis can't, a charge goes to the local fallback."""
        args: list[str | int] = [*self._args(r.limits), d_requests, d_tokens]
        reply = await self._call(lambda: self._adjust([self._key(r.subject)], args))
        if reply is None and d_tokens > 0:
            self.fallback.adjust(r.subject, r.limits, 0, d_tokens)

    async def _call(self, op: Callable[[], Awaitable[Any]]) -> Sequence[Any] | None:
        """Run one Redis call under the breaker and the timeout; None when the fallback must decide."""
        may, probe = self.breaker.acquire()
        if not may:
            return None
        start = 0.0
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                start = time.perf_counter()  # the budget judges Redis, not the wait for a slot
                reply = await op()
        except asyncio.CancelledError:
            self.breaker.release(probe)
            raise
        except Exception as e:  # any Redis problem (or a bad reply) -> local decision, never an error
            self._stats["redis_failed"] += 1
            why = "timeout" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}"
            self.breaker.failure(probe, why)
            return None
        elapsed = time.perf_counter() - start
        if elapsed > self._budget:
            self._stats["redis_slow"] += 1
            self.breaker.failure(probe, f"slow reply ({elapsed * 1000:.1f} ms)")
        else:
            self._stats["redis_ok"] += 1
            self.breaker.success(probe)
        if not isinstance(reply, list | tuple) or len(reply) < 2:
            return None
        return reply
