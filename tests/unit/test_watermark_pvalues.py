"""Exact tails in log space: agree with scipy where scipy is accurate, stay finite far beyond it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from antidistill.watermark.schemes import GumbelScheme, KgwScheme
from antidistill.watermark.schemes.pvalues import binomial_upper_tail, bonferroni, gamma_upper_tail


def _log10_q_integer(n: int, s: float) -> float:
    """Closed form for integer n: Q(n, s) = e^-s * sum_{k<n} s^k / k!  (in log space)."""
    k = np.arange(n)
    return float((-s + special.logsumexp(k * math.log(s) - special.gammaln(k + 1))) / math.log(10))


@pytest.mark.parametrize(
    ("n", "s"), [(1, 5.0), (1, 2000.0), (10, 900.0), (200, 2500.0), (5000, 40000.0), (3, 1e5)]
)
def test_gamma_tail_matches_closed_form(n: int, s: float) -> None:
    _, lp = gamma_upper_tail(np.array([n]), np.array([s]))
    assert math.isfinite(lp[0])
    assert lp[0] == pytest.approx(_log10_q_integer(n, s), rel=1e-9, abs=1e-9)


def test_gamma_tail_agrees_with_scipy_across_the_switch() -> None:
    # scipy is accurate down to ~1e-300; the continued fraction takes over below 1e-250
    n = np.array([50, 50, 50, 400])
    s = np.array([300.0, 500.0, 700.0, 1600.0])
    _, lp = gamma_upper_tail(n, s)
    ref = np.log10(special.gammaincc(n, s))
    np.testing.assert_allclose(lp, ref, rtol=1e-9)


def test_binomial_tail_matches_scipy_and_exact_extremes() -> None:
    # K = N: p = gamma^N exactly
    _, lp = binomial_upper_tail(np.array([10_000]), np.array([10_000.0]), 0.25)
    assert lp[0] == pytest.approx(10_000 * math.log10(0.25), rel=1e-12)
    # deep tail (p ~ 1e-400): compare with the log-sum of the pmf (scipy's logpmf is accurate there)
    n, k = 2000, 1300
    ks = np.arange(k, n + 1)
    ref = special.logsumexp(stats.binom.logpmf(ks, n, 0.25)) / math.log(10)
    _, lp = binomial_upper_tail(np.array([n]), np.array([float(k)]), 0.25)
    assert ref < -250 and lp[0] == pytest.approx(ref, rel=1e-10)
    # regular range: exactly scipy's betainc
    p, lp = binomial_upper_tail(np.array([100, 100, 7]), np.array([40.0, 0.0, 3.0]), 0.25)
    ref = [stats.binom.sf(39, 100, 0.25), 1.0, stats.binom.sf(2, 7, 0.25)]
    np.testing.assert_allclose(p, ref, rtol=1e-12)


def test_schemes_never_report_minus_infinity_for_a_finite_sample() -> None:
    g, kgw = GumbelScheme(), KgwScheme()
    _, lp = g.combine(np.full(20_000, 30.0))  # S = 600k over N = 20k: p ~ 10^-240000
    assert math.isfinite(lp) and lp < -100_000
    _, lp = kgw.combine(np.ones(50_000))  # all green: p = 0.25^50000
    assert lp == pytest.approx(50_000 * math.log10(0.25), rel=1e-12)
    assert kgw.combine(np.zeros(10)) == (1.0, 0.0)
    assert g.combine(np.array([])) == (1.0, 0.0)


def test_bonferroni_in_log_space() -> None:
    assert bonferroni(-400.0, 1000)[()] == pytest.approx(-397.0)
    assert bonferroni(-1.0, 1000)[()] == 0.0
