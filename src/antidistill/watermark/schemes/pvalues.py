"""Exact tail probabilities in log space (tiny p-values are reported, never rounded to 0).

* Gumbel / exponential-minimum: under H0 the sum ``S`` of ``N`` Exp(1) scores is Gamma(N, 1), so
  ``p = Q(N, S) = gammaincc(N, S)``. When scipy's value underflows (below ~1e-250) we evaluate
  ``log Q = -S + N log S - lgamma(N) + log CF`` with the Legendre continued fraction (modified Lentz),
  which converges fast in exactly that regime (S >> N).
* KGW: under H0 the green count ``K`` among ``N`` is Binomial(N, gamma), so
  ``p = P(Bin >= K) = betainc(K, N - K + 1, gamma)``. When that underflows we sum the tail terms
  ``log C(N, k) + k log gamma + (N - k) log(1 - gamma)`` with logsumexp; the terms fall geometrically.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import special

FloatArray = NDArray[np.float64]
_LN10 = math.log(10.0)
_SAFE = 1e-250  # below this, recompute in log space


def _log_gammaincc_cf(a: float, x: float) -> float:
    """ln Q(a, x) by continued fraction; valid for x > a + 1 (asserted by the caller)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return -x + a * math.log(x) - float(special.gammaln(a)) + math.log(h)


def gamma_upper_tail(n: NDArray[np.integer], s: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(p, log10 p) of ``P(Gamma(n, 1) >= s)``; n = 0 gives p = 1."""
    n_f = np.asarray(n, dtype=np.float64)
    s_f = np.asarray(s, dtype=np.float64)
    p = np.ones_like(s_f)
    pos = n_f > 0
    p[pos] = special.gammaincc(n_f[pos], s_f[pos])
    with np.errstate(divide="ignore"):
        log10p = np.log10(p)
    for i in np.flatnonzero(pos & (p < _SAFE)):
        a, x = float(n_f[i]), float(s_f[i])
        if x <= a + 1.0:  # cannot happen for p < 1e-250; guard anyway
            raise ArithmeticError(f"gamma tail underflow outside the continued-fraction regime: {a}, {x}")
        log10p[i] = _log_gammaincc_cf(a, x) / _LN10
    return p, log10p


def _log_binom_tail(n: int, k: int, gamma: float) -> float:
    """ln P(Bin(n, gamma) >= k) by summing log terms (used when k is far above n * gamma)."""
    lg, l1g = math.log(gamma), math.log1p(-gamma)
    head = float(special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1))
    head += k * lg + (n - k) * l1g
    ratio = (n - k) / (k + 1) * gamma / (1.0 - gamma)  # t_{k+1} / t_k, decreasing in k
    if ratio <= 0.0:
        return head
    m = n - k + 1 if ratio >= 1.0 else min(n - k + 1, max(64, math.ceil(80.0 / -math.log(ratio)) + 64))
    ks = np.arange(k, k + m, dtype=np.float64)
    terms = special.gammaln(n + 1) - special.gammaln(ks + 1) - special.gammaln(n - ks + 1)
    terms += ks * lg + (n - ks) * l1g
    return float(special.logsumexp(terms))


def binomial_upper_tail(n: NDArray[np.integer], k: FloatArray, gamma: float) -> tuple[FloatArray, FloatArray]:
    """(p, log10 p) of ``P(Bin(n, gamma) >= k)``; k = 0 gives p = 1."""
    n_i = np.asarray(n, dtype=np.int64)
    k_i = np.rint(np.asarray(k, dtype=np.float64)).astype(np.int64)
    p = np.ones(n_i.shape, dtype=np.float64)
    pos = k_i > 0
    p[pos] = special.betainc(k_i[pos].astype(np.float64), (n_i[pos] - k_i[pos] + 1).astype(np.float64), gamma)
    with np.errstate(divide="ignore"):
        log10p = np.log10(p)
    for i in np.flatnonzero(pos & (p < _SAFE)):
        log10p[i] = _log_binom_tail(int(n_i[i]), int(k_i[i]), gamma) / _LN10
    return p, log10p


def bonferroni(log10_p: FloatArray | float, factor: int) -> FloatArray:
    """log10 of ``min(1, factor * p)``."""
    return np.minimum(0.0, np.asarray(log10_p, dtype=np.float64) + math.log10(max(1, factor)))
