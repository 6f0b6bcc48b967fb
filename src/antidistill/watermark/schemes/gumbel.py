"""Distortion-free exponential-minimum (Gumbel-max) watermark, Aaronson style.

Sampling: with PRF values ``r_i`` of the current window, emit ``argmax_i r_i ** (1 / p_i)`` over the
(temperature-scaled, top-p filtered) distribution ``p``. Because ``-ln r_i / p_i`` are independent
exponentials with rates ``p_i``, the winner is distributed exactly as ``p``: no distortion for a fresh
window. A window already used in the same request (earlier in this response, or by another of the
request's ``n`` choices) would repeat the same choice, so ``WatermarkSampler`` then asks for
``repeated=True`` and a plain draw from ``p`` is made instead (see its docstring for why the ``n``
choices then are independent samples and still detect).

Detection: per scored tuple ``s = -ln(1 - r_token)``; under H0 (text independent of the key) each
``s ~ Exp(1)`` independently over distinct tuples, so ``S = sum s ~ Gamma(N, 1)`` and
``p = gammaincc(N, S)`` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from antidistill.watermark.schemes.base import KeyedScheme, ParamValue, check_params
from antidistill.watermark.schemes.pvalues import gamma_upper_tail
from antidistill.watermark.schemes.sampling import FloatArray, IntArray, Workspace


@dataclass(frozen=True, slots=True)
class GumbelScheme(KeyedScheme):
    name: ClassVar[str] = "gumbel"
    fresh_windows_only: ClassVar[bool] = True
    window: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 8:
            raise ValueError(f"gumbel window must be in 1..8 (3-4 recommended), got {self.window}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GumbelScheme:
        check_params(cls.name, params, ("window",))
        return cls(window=int(params.get("window", 4)))

    def params(self) -> dict[str, ParamValue]:
        return {"window": self.window}

    def select(self, probs: FloatArray, values: FloatArray, rng: np.random.Generator) -> IntArray:
        # argmax r^(1/p) == argmax ln(r)/p; p == 0 gives -inf (never chosen). ``rng`` is unused: the
        # choice is a deterministic function of the key, the window and p.
        with np.errstate(divide="ignore"):
            keys = np.log(values) / probs
        return np.argmax(keys, axis=1).astype(np.int64)

    def choose(self, probs: FloatArray, values: FloatArray, rng: np.random.Generator, ws: Workspace) -> int:
        """Same choice as :meth:`select`, without a logarithm over the whole vocabulary.

        With ``j`` the most likely token and ``k_j = ln(r_j) / p_j < 0``, a token ``i`` can only win if
        ``ln(r_i) > k_j p_i``; since ``ln r <= r - 1`` that needs ``r_i > 1 + k_j p_i`` (a cheap
        filter that every possible winner passes; a 1e-9 margin absorbs rounding). Exact keys are
        then computed for the few survivors only; ties resolve to the lowest id, as in ``argmax``.
        """
        j = int(np.argmax(probs))
        k_j = math.log(float(values[j])) / float(probs[j])
        thr = np.multiply(probs, k_j, out=ws.aux)
        thr += 1.0 - 1e-9
        cand = np.flatnonzero(np.greater(values, thr, out=ws.mask))
        with np.errstate(divide="ignore"):
            keys = np.log(values[cand]) / probs[cand]
        best = int(np.argmax(keys)) if cand.shape[0] else -1
        if best < 0 or keys[best] < k_j or (keys[best] == k_j and j < cand[best]):
            return j
        return int(cand[best])

    def tuple_scores(self, values: FloatArray) -> FloatArray:
        return -np.log(1.0 - values)  # exact where it matters: 1 - r is exact for r >= 1/2 (Sterbenz)

    def combine_stats(self, n: NDArray[np.integer[Any]], stat: FloatArray) -> tuple[FloatArray, FloatArray]:
        return gamma_upper_tail(n, stat)
