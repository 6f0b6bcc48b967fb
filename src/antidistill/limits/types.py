"""Value types of the rate limiter: what is limited (``LimitSpec``), what a reservation says
(``Reservation`` with one ``Quota`` per limited dimension) and the ``Limiter`` protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol

from antidistill.errors import ConfigError

Source = Literal["local", "redis", "fallback", "unlimited"]
"""Where a reservation was decided: an in-process limiter, Redis (shared by all replicas), the local
fallback of a RedisLimiter whose circuit is open (a local share of the limit), or no limit at all."""

DenyReason = Literal["requests", "tokens", "too_large"]
"""``requests``/``tokens``: that per-period budget is used up for now (retry later);
``too_large``: the request alone needs more tokens than the whole TPM limit (it can never fit)."""


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """Per-period limits of one subject; ``None`` means that dimension is not limited.

    ``rpm`` and ``tpm`` are the budgets per ``period_s`` (a minute unless a test shortens it).
    A bad value raises ConfigError, as limits come from configuration (tiers, overrides).
    """

    rpm: int | None = None
    tpm: int | None = None
    period_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"rate limit {name} must be a positive integer or None, got {v!r}")
        p = self.period_s
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) or p <= 0:
            raise ConfigError(f"rate limit period_s must be a positive number, got {self.period_s!r}")

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None


@dataclass(frozen=True, slots=True)
class Quota:
    """One dimension (requests or tokens) of a subject right after the reservation."""

    limit: int
    remaining: int
    reset_s: float
    """Seconds until this budget is fully replenished (OpenAI's ``x-ratelimit-reset-*``)."""


class _Ticket:
    """Makes settle/cancel act at most once per reservation. Claimed under the limiter's lock (local)
    or on the limiter's one event loop (Redis), so check-then-set needs no lock of its own."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def claim(self) -> bool:
        if self.done:
            return False
        self.done = True
        return True


@dataclass(frozen=True, slots=True)
class Reservation:
    """The verdict of ``Limiter.reserve``: allowed or not, and the state of each limited dimension.

    An allowed reservation holds 1 request and ``tokens`` tokens until ``settle`` corrects the token
    count to what was really used (or ``cancel`` gives everything back). A denied one holds nothing.
    """

    subject: str
    limits: LimitSpec
    tokens: int
    allowed: bool
    requests_quota: Quota | None
    tokens_quota: Quota | None
    retry_after_s: float | None
    """Denied: seconds until this same request would be admitted; None when allowed or too large."""
    reason: DenyReason | None
    source: Source
    _ticket: _Ticket = field(default_factory=_Ticket, repr=False, compare=False)


class Limiter(Protocol):
    """Per-subject RPM/TPM limits with reserve-then-settle. Implementations never raise on an
    infrastructure problem (they degrade); they raise ValueError only on a caller bug."""

    async def reserve(self, subject: str, limits: LimitSpec, tokens: int) -> Reservation:
        """Atomically check and take 1 request + ``tokens`` tokens, or take nothing and deny."""
        ...

    async def settle(self, reservation: Reservation, actual_tokens: int) -> int:
        """Correct the reserved tokens to ``actual_tokens``: refund the excess or charge the shortfall
        (a charge is never refused: the tokens were produced). Acts once per reservation; returns the
        token change applied (+ charged, - refunded; 0 when denied, already settled or exact)."""
        ...

    async def cancel(self, reservation: Reservation) -> None:
        """Give back the request and all reserved tokens (the request did not go ahead). Acts once;
        no-op after settle or on a denied reservation."""
        ...

    def headers(self, reservation: Reservation) -> dict[str, str]:
        """OpenAI-style ``x-ratelimit-*`` headers (plus ``retry-after`` when denied)."""
        ...

    async def aclose(self) -> None: ...


def check_tokens(tokens: int, what: str = "tokens") -> None:
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"{what} must be a non-negative int, got {tokens!r}")


def check_subject(subject: str) -> None:
    if not isinstance(subject, str) or not subject:
        raise ValueError(f"subject must be a non-empty str, got {subject!r}")
