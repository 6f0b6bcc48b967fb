"""What a reservation tells the client: OpenAI-style rate-limit headers and the 429 error.

Headers (a dimension that is not limited sends none of its headers)::

    x-ratelimit-limit-requests: 60          x-ratelimit-limit-tokens: 150000
    x-ratelimit-remaining-requests: 59      x-ratelimit-remaining-tokens: 149744
    x-ratelimit-reset-requests: 1s          x-ratelimit-reset-tokens: 102ms
    retry-after: 2       retry-after-ms: 1500      (denied only)
    x-should-retry: false                          (a request that can never fit: OpenAI SDKs stop)

Reset values are durations until the budget is fully replenished, written like OpenAI's
(``20ms``, ``1.5s``, ``6m0s``, ``1h0m0s``), rounded up to the millisecond. ``retry-after`` is whole
seconds (rounded up, as HTTP wants); ``retry-after-ms`` is what the OpenAI SDKs read first.

The error message never names the subject: a cluster limit must not reveal that the account was
linked to a cluster.
"""

from __future__ import annotations

import math

from antidistill.errors import RateLimitError
from antidistill.limits.types import Reservation


def duration(seconds: float) -> str:
    """``0.02 -> "20ms"``, ``1.5 -> "1.5s"``, ``360 -> "6m0s"``, ``3725 -> "1h2m5s"`` (ceil to ms)."""
    ms = max(0, math.ceil(seconds * 1000.0 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms // 1000}" if ms % 1000 == 0 else f"{ms / 1000:.3f}".rstrip("0")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_limit_headers(r: Reservation) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, q in (("requests", r.requests_quota), ("tokens", r.tokens_quota)):
        if q is not None:
            out[f"x-ratelimit-limit-{name}"] = str(q.limit)
            out[f"x-ratelimit-remaining-{name}"] = str(q.remaining)
            out[f"x-ratelimit-reset-{name}"] = duration(q.reset_s)
    if not r.allowed and r.retry_after_s is not None:
        out["retry-after"] = str(max(1, math.ceil(r.retry_after_s - 1e-9)))
        out["retry-after-ms"] = str(max(1, math.ceil(r.retry_after_s * 1000.0 - 1e-6)))
    if r.reason == "too_large":
        out["x-should-retry"] = "false"
    return out


def _per(period_s: float) -> str:
    return "min" if period_s == 60.0 else f"{period_s:g}s"


def rate_limit_error(r: Reservation) -> RateLimitError:
    """The 429 for a denied reservation, with its headers attached (for the HTTP edge to send)."""
    if r.allowed:
        raise ValueError("rate_limit_error() of an allowed reservation")
    per = _per(r.limits.period_s)
    if r.reason == "too_large":
        message = (
            f"Request too large for tokens per {per} (TPM): limit {r.limits.tpm}, requested {r.tokens}. "
            "Send fewer prompt tokens or a smaller max_tokens."
        )
    else:
        what, short, limit, asked = (
            ("requests", "RPM", r.limits.rpm, 1)
            if r.reason == "requests"
            else ("tokens", "TPM", r.limits.tpm, r.tokens)
        )
        wait = duration(r.retry_after_s or 0.0)
        message = (
            f"Rate limit reached for {what} per {per} ({short}): limit {limit}, requested {asked}. "
            f"Please try again in {wait}."
        )
    return RateLimitError(message, headers=rate_limit_headers(r))
