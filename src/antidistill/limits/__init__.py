"""Rate limits per subject (an account id, a cluster id, ...): requests and tokens per minute, with
reserve-then-settle, OpenAI-style headers, in-process or shared by all replicas through Redis.

    limiter = make_limiter(settings.redis_url, expected_replicas=3)      # in the app's lifespan
    r = await limiter.reserve(account_id, LimitSpec(rpm=60, tpm=90_000), prompt_tokens + max_tokens)
    if not r.allowed:
        raise rate_limit_error(r)                 # 429 with x-ratelimit-* and retry-after headers
    ...                                           # generate / stream
    await limiter.settle(r, prompt_tokens + completion_tokens)   # refund or charge the difference
    response.headers.update(limiter.headers(r))

See ``bucket.py`` for the algorithm and ``redis_limiter.py`` for what happens during a Redis outage.
"""

from __future__ import annotations

from typing import Any

from antidistill.clock import Clock
from antidistill.limits.breaker import CircuitBreaker
from antidistill.limits.headers import duration, rate_limit_error, rate_limit_headers
from antidistill.limits.local import LocalLimiter
from antidistill.limits.redis_limiter import RedisLimiter
from antidistill.limits.types import DenyReason, Limiter, LimitSpec, Quota, Reservation, Source

__all__ = [
    "CircuitBreaker",
    "DenyReason",
    "LimitSpec",
    "Limiter",
    "LocalLimiter",
    "Quota",
    "RedisLimiter",
    "Reservation",
    "Source",
    "duration",
    "make_limiter",
    "rate_limit_error",
    "rate_limit_headers",
]


def make_limiter(redis_url: str | None, *, clock: Clock | None = None, **redis_options: Any) -> Limiter:
    """A LocalLimiter when ``redis_url`` is None (single node), else a RedisLimiter on that URL.
    ``redis_options`` go to ``RedisLimiter.from_url`` (prefix, expected_replicas, timeout_s,
    cooldown_s, ...; ``SharedLimitSettings.limiter_options()`` gives all of them). Without Redis only
    ``max_local_subjects`` applies. Building it does no I/O: a Redis that is down at start-up just
    means the fallback decides."""
    if redis_url is None:
        return LocalLimiter(clock, max_subjects=int(redis_options.get("max_local_subjects", 100_000)))
    return RedisLimiter.from_url(redis_url, clock=clock, **redis_options)
