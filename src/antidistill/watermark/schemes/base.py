"""What every watermark scheme is, and the implementation the built-in schemes share.

A scheme is a small frozen object holding its parameters (window size, gamma, ...); keys are passed
in. Everything here is a pure function of its inputs: no I/O, no clock, no module state. Randomness
that is not the watermark's (plain sampling) comes from a numpy Generator the caller owns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from antidistill.watermark.schemes import prf
from antidistill.watermark.schemes.sampling import FloatArray, IntArray, Workspace, draw, probs_into

ParamValue = int | float


class SecretKey(Protocol):
    """Anything holding a 32-byte watermark secret (``WatermarkKey`` does)."""

    @property
    def secret(self) -> bytes: ...


class SamplingKnobs(Protocol):
    """The sampling parameters a scheme honours (``backends.base.SamplingParams`` has them)."""

    @property
    def temperature(self) -> float: ...

    @property
    def top_p(self) -> float: ...


@runtime_checkable
class WatermarkScheme(Protocol):
    name: ClassVar[str]
    window: int

    def params(self) -> dict[str, ParamValue]:
        """Canonical parameters (what a key record stores)."""
        ...

    def seed(self, key: SecretKey) -> int:
        """The key's PRF seed for this scheme configuration."""
        ...

    def select(self, probs: FloatArray, values: FloatArray, rng: np.random.Generator) -> IntArray:
        """Watermarked choice per row of ``probs`` (B, V) given PRF ``values`` (B, V)."""
        ...

    def sample(
        self,
        context: Sequence[int],
        logits: NDArray[Any],
        params: SamplingKnobs,
        rng: np.random.Generator,
        key: SecretKey,
        *,
        repeated: bool = False,
    ) -> int:
        """Next token of one sequence. Never modifies ``logits``."""
        ...

    def tuple_scores(self, values: FloatArray) -> FloatArray:
        """Per-tuple detection score from the PRF value of each scored (window, token) tuple."""
        ...

    def score(self, tokens: NDArray[Any], key: SecretKey) -> FloatArray:
        """Per-position scores of one sequence, NaN before the first full window (no dedup)."""
        ...

    def combine(self, scores: FloatArray) -> tuple[float, float]:
        """(p_value, log10_p) of a set of already deduplicated per-tuple scores."""
        ...

    def combine_stats(self, n: NDArray[Any], stat: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Vectorized (p_values, log10_p) from tuple counts ``n`` and score sums ``stat``."""
        ...


class KeyedScheme:
    """Shared implementation. Subclasses define ``name``, ``from_params``, ``params``, ``select``
    (batched), ``choose`` (one sequence, workspace buffers), ``tuple_scores`` and ``combine_stats``."""

    name: ClassVar[str] = ""
    # True: a window already used in this response gets a plain draw (a deterministic scheme would
    # otherwise repeat itself); False: the scheme keeps marking repeated windows.
    fresh_windows_only: ClassVar[bool] = False
    window: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> KeyedScheme:
        """Build from a key record's parameters (unknown names raise ValueError)."""
        raise NotImplementedError

    def params(self) -> dict[str, ParamValue]:
        raise NotImplementedError

    def select(self, probs: FloatArray, values: FloatArray, rng: np.random.Generator) -> IntArray:
        raise NotImplementedError

    def choose(self, probs: FloatArray, values: FloatArray, rng: np.random.Generator, ws: Workspace) -> int:
        raise NotImplementedError

    def tuple_scores(self, values: FloatArray) -> FloatArray:
        raise NotImplementedError

    def combine_stats(self, n: NDArray[Any], stat: FloatArray) -> tuple[FloatArray, FloatArray]:
        raise NotImplementedError

    def tag(self) -> str:
        return f"{self.name}|h={self.window}"

    def seed(self, key: SecretKey) -> int:
        return prf.prf_seed(key.secret, self.tag())

    def vocab_values(self, key: SecretKey, window: Sequence[int], vocab_size: int) -> FloatArray:
        """PRF values of every candidate token after ``window`` (the last ``self.window`` tokens)."""
        return prf.vocab_values(prf.window_state(self.seed(key), window), vocab_size)[0]

    def workspace(self, key: SecretKey, vocab_size: int) -> Workspace:
        return Workspace(vocab_size, self.seed(key))

    def sample(
        self,
        context: Sequence[int],
        logits: NDArray[Any],
        params: SamplingKnobs,
        rng: np.random.Generator,
        key: SecretKey,
        *,
        repeated: bool = False,
    ) -> int:
        if params.temperature <= 0:
            return int(np.argmax(logits))
        return self.sample_step(
            context, logits, params, rng, self.workspace(key, logits.shape[-1]), repeated=repeated
        )

    def sample_step(
        self,
        context: Sequence[int],
        logits: NDArray[Any],
        params: SamplingKnobs,
        rng: np.random.Generator,
        ws: Workspace,
        *,
        repeated: bool = False,
    ) -> int:
        """:meth:`sample` with a caller-kept workspace (the key's seed and vocabulary buffers)."""
        if params.temperature <= 0:
            return int(np.argmax(logits))
        if logits.shape[-1] != ws.vocab_size:
            raise ValueError(f"logits have {logits.shape[-1]} entries, workspace expects {ws.vocab_size}")
        probs = probs_into(logits, params.temperature, params.top_p, ws)
        if (repeated and self.fresh_windows_only) or len(context) < self.window:
            return draw(probs, rng, ws)
        values = ws.prf_values(context[len(context) - self.window :])
        return self.choose(probs, values, rng, ws)

    def score(self, tokens: NDArray[Any], key: SecretKey) -> FloatArray:
        toks = np.asarray(tokens, dtype=np.int64)
        out = np.full(toks.shape[0], np.nan)
        mixes = prf.sliding_mixes(toks, self.window + 1)
        if mixes.shape[0]:
            values = prf.to_unit(prf.chain(np.array(self.seed(key), dtype=np.uint64), mixes))
            out[self.window :] = self.tuple_scores(values)
        return out

    def combine(self, scores: FloatArray) -> tuple[float, float]:
        s = np.asarray(scores, dtype=np.float64)
        s = s[~np.isnan(s)]
        p, lp = self.combine_stats(np.array([s.shape[0]]), np.array([s.sum()]))
        return float(p[0]), float(lp[0])


def check_params(name: str, given: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {name} parameter(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}")
