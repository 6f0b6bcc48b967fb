"""The arithmetic of the limiter, shared by LocalLimiter and RedisLimiter (whose Lua script applies
the same admission rule atomically; see ``scripts.py``). Pure functions: no clock, no I/O.

Algorithm: GCRA, written in its token-bucket form. Per subject and dimension we keep ``used``, the
amount taken and not yet replenished, and the time it was last brought up to date. ``used`` drains
continuously at ``capacity / period`` per second. A request for ``n`` units is admitted when
``used + n <= capacity``. A fresh subject can spend its whole budget at once, and after that it
gets ``limit / period`` more per second. Any t seconds admit at most ``limit * (1 + t / period)``:
exactly the limit at one instant, 1.017x in any second, 2x only over a whole period. A fixed
window, by contrast, lets 2x through within a moment at each window edge. The state is two floats per
subject (O(1), no per-request log), and the reset time and retry-after are exact, because ``used``
drains linearly. Charges made at settle time come after admission and can push ``used`` past the
capacity (debt); later requests then wait until it drains.

``capacity`` is ``limit * share``. ``share`` is 1 except in a RedisLimiter's fallback during a Redis
outage, where each of k replicas enforces ``1/k`` of the limit. Then a request larger than the local
share (but within the global limit) is still admitted when the local bucket is empty, and the bucket
goes into debt (``used > capacity``) until it drains. Without this rule such a request could never pass.

Values stay of the order of the limit (never epoch times), so float error is tiny; ``EPS`` (a
millionth of a unit) absorbs it so that a full budget is exactly the limit.
"""

from __future__ import annotations

import math

from antidistill.limits.types import DenyReason, LimitSpec, Quota, Reservation, Source

EPS = 1e-6


def drained(used: float, elapsed_s: float, capacity: float, period_s: float) -> float:
    """``used`` after ``elapsed_s`` seconds of draining (never below 0; no change for elapsed <= 0)."""
    if elapsed_s <= 0.0:
        return used
    return max(0.0, used - elapsed_s * capacity / period_s)


def admits(used: float, n: int, capacity: float, limit: int) -> bool:
    """Whether ``n`` more units fit now. ``n > limit`` never fits."""
    if n > limit:
        return False
    return used + n <= capacity + EPS or used <= EPS


def wait_s(used: float, n: int, capacity: float, period_s: float) -> float:
    """Seconds of draining until ``admits`` becomes true (assumes ``n <= limit``)."""
    target = max(capacity - n, 0.0)
    return max(0.0, (used - target) * period_s / capacity)


def seconds_to_empty(used: float, capacity: float, period_s: float) -> float:
    return max(0.0, used * period_s / capacity)


def quota(limit: int, used: float, share: float, period_s: float) -> Quota:
    """What a client is told: its limit, what is left (scaled back up from a local share), reset."""
    capacity = limit * share
    remaining = math.floor((capacity - used) / share + EPS)
    return Quota(
        limit=limit,
        remaining=min(limit, max(0, remaining)),
        reset_s=seconds_to_empty(used, capacity, period_s),
    )


def verdict(
    spec: LimitSpec, used_r: float, used_k: float, tokens: int, share: float
) -> tuple[bool, DenyReason | None, float | None]:
    """(allowed, reason, retry_after_s) of a request for 1 request + ``tokens`` tokens, given the
    current (drained) usage. When both dimensions deny, the reason is the one with the longer wait."""
    if spec.tpm is not None and tokens > spec.tpm:
        return False, "too_large", None
    waits: list[tuple[float, DenyReason]] = []
    if spec.rpm is not None and not admits(used_r, 1, spec.rpm * share, spec.rpm):
        waits.append((wait_s(used_r, 1, spec.rpm * share, spec.period_s), "requests"))
    if spec.tpm is not None and not admits(used_k, tokens, spec.tpm * share, spec.tpm):
        waits.append((wait_s(used_k, tokens, spec.tpm * share, spec.period_s), "tokens"))
    if not waits:
        return True, None, None
    wait, reason = max(waits, key=lambda w: w[0])
    return False, reason, wait


def reservation(
    subject: str,
    spec: LimitSpec,
    tokens: int,
    used_r: float,
    used_k: float,
    *,
    allowed: bool,
    reason: DenyReason | None,
    retry_after_s: float | None,
    share: float,
    source: Source,
) -> Reservation:
    """A Reservation from the usage right after the decision (after the take, when allowed)."""
    return Reservation(
        subject=subject,
        limits=spec,
        tokens=tokens,
        allowed=allowed,
        requests_quota=None if spec.rpm is None else quota(spec.rpm, used_r, share, spec.period_s),
        tokens_quota=None if spec.tpm is None else quota(spec.tpm, used_k, share, spec.period_s),
        retry_after_s=retry_after_s,
        reason=reason,
        source=source,
    )


def unlimited(subject: str, spec: LimitSpec, tokens: int) -> Reservation:
    return Reservation(subject, spec, tokens, True, None, None, None, None, "unlimited")
