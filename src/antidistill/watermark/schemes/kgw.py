"""KGW "LeftHash" green-list watermark (the radioactivity canary).

The green list of a step is every candidate whose PRF value given the window (the ``window`` previous
tokens, default 2) is below ``gamma``; ``delta`` is added to green logits (after temperature scaling,
inside the top-p nucleus) before sampling. Detection counts green tokens ``K`` among ``N`` scored
distinct tuples; under H0 ``K ~ Binomial(N, gamma)`` exactly, so ``p = betainc(K, N - K + 1, gamma)``
(``p = 1`` for ``K = 0``). The test is discrete, hence slightly conservative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from antidistill.watermark.schemes.base import KeyedScheme, ParamValue, SecretKey, check_params
from antidistill.watermark.schemes.pvalues import binomial_upper_tail
from antidistill.watermark.schemes.sampling import FloatArray, IntArray, Workspace, categorical, draw


@dataclass(frozen=True, slots=True)
class KgwScheme(KeyedScheme):
    name: ClassVar[str] = "kgw"
    window: int = 2
    gamma: float = 0.25
    delta: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 8:
            raise ValueError(f"kgw window must be in 1..8, got {self.window}")
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"kgw gamma must be in (0, 1), got {self.gamma}")
        if not 0.0 < self.delta <= 20.0:
            raise ValueError(f"kgw delta must be in (0, 20], got {self.delta}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> KgwScheme:
        check_params(cls.name, params, ("window", "gamma", "delta"))
        return cls(
            window=int(params.get("window", 2)),
            gamma=float(params.get("gamma", 0.25)),
            delta=float(params.get("delta", 2.0)),
        )

    def params(self) -> dict[str, ParamValue]:
        return {"window": self.window, "gamma": self.gamma, "delta": self.delta}

    def green_mask(self, key: SecretKey, window: Sequence[int], vocab_size: int) -> NDArray[np.bool_]:
        """Green list of one window over token ids ``0..vocab_size-1``."""
        return self.vocab_values(key, window, vocab_size) < self.gamma

    def select(self, probs: FloatArray, values: FloatArray, rng: np.random.Generator) -> IntArray:
        # adding delta to green logits == multiplying green probabilities by e^delta, then renormalizing
        boosted = probs * np.where(values < self.gamma, math.exp(self.delta), 1.0)
        boosted /= boosted.sum(axis=1, keepdims=True)
        return categorical(boosted, rng)

    def choose(self, probs: FloatArray, values: FloatArray, rng: np.random.Generator, ws: Workspace) -> int:
        np.less(values, self.gamma, out=ws.mask)
        weights = values  # the workspace's PRF buffer is free again once the green mask is taken
        np.multiply(ws.mask, math.exp(self.delta) - 1.0, out=weights)  # e^delta - 1 on green, else 0
        weights += 1.0
        weights *= probs
        return draw(weights, rng, ws)

    def tuple_scores(self, values: FloatArray) -> FloatArray:
        return (values < self.gamma).astype(np.float64)

    def combine_stats(self, n: NDArray[np.integer[Any]], stat: FloatArray) -> tuple[FloatArray, FloatArray]:
        return binomial_upper_tail(n, stat, self.gamma)
