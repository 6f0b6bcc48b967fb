"""Sampling math shared by the schemes: temperature, top-p, categorical draws, PRF over the vocabulary.

Two forms of each step: batched (``(B, V)`` arrays; simulation and tests) and a single-sequence fast
path that reuses a :class:`Workspace`'s buffers. Fresh vocabulary-sized temporaries are expensive
here (glibc hands freed large buffers back to the OS, so each new one page-faults), and a decoding
step runs once per generated token, so the fast path allocates almost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from antidistill.watermark.schemes import prf

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class Workspace:
    """Reusable buffers and the PRF seed for sampling one sequence (not thread-safe)."""

    def __init__(self, vocab_size: int, seed: int) -> None:
        self.vocab_size = vocab_size
        self.seed = seed
        self.mix = np.arange(1, vocab_size + 1, dtype=np.uint64)
        self.mix *= prf.PHI  # token_mix of every candidate id
        self.words = np.empty(vocab_size, dtype=np.uint64)
        self.scratch = np.empty(vocab_size, dtype=np.uint64)
        self.z32 = np.empty(vocab_size, dtype=np.float32)
        self.probs = np.empty(vocab_size, dtype=np.float64)
        self.values = np.empty(vocab_size, dtype=np.float64)
        self.aux = np.empty(vocab_size, dtype=np.float64)
        self.mask = np.empty(vocab_size, dtype=bool)

    def prf_values(self, window: Sequence[int] | NDArray[np.integer[Any]]) -> FloatArray:
        """PRF values of every candidate after ``window``, written into ``self.values``."""
        state = prf.window_state(self.seed, window)
        np.add(self.mix, state, out=self.words)
        w, t = self.words, self.scratch
        np.right_shift(w, prf.S30, out=t)
        w ^= t
        w *= prf.M1
        np.right_shift(w, prf.S27, out=t)
        w ^= t
        w *= prf.M2
        np.right_shift(w, prf.S31, out=t)
        w ^= t
        np.right_shift(w, prf.S12, out=t)
        np.copyto(self.values, t.view(np.int64))
        self.values += 0.5
        self.values *= prf.INV_2_52
        return self.values


def _check(temperature: float, top_p: float) -> None:
    if temperature <= 0:
        raise ValueError("temperature must be > 0 here (greedy is handled by the caller)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def nucleus_indices(p: FloatArray, top_p: float) -> IntArray:
    """Indices of the smallest set of most likely tokens whose mass reaches ``top_p`` (1-D)."""
    v = p.shape[0]
    k = min(v, 256)
    while True:
        top = np.argpartition(p, v - k)[v - k :] if k < v else np.arange(v)
        order = top[np.argsort(-p[top], kind="stable")]
        csum = np.cumsum(p[order])
        target = top_p * float(p.sum()) if k == v else top_p
        hit = int(np.searchsorted(csum, target))
        if hit < k or k == v:
            return order[: min(hit, k - 1) + 1].astype(np.int64)
        k = min(v, k * 4)


def probs_into(logits: NDArray[Any], temperature: float, top_p: float, ws: Workspace) -> FloatArray:
    """Single-sequence distribution into ``ws.probs`` (``logits`` is never modified)."""
    _check(temperature, top_p)
    # exp in float32 (SIMD on AVX2, ~3x faster than float64 here; the same precision as the model's
    # own softmax), normalization in float64.
    z = ws.z32
    np.copyto(z, logits, casting="same_kind")
    z *= np.float32(1.0 / temperature)
    m = z.max()
    if not np.isfinite(m):
        raise ValueError("logits contain NaN or +inf, or are all -inf")
    z -= m
    np.exp(z, out=z)
    out = ws.probs
    np.copyto(out, z)
    out /= out.sum()
    if top_p < 1.0:
        keep = nucleus_indices(out, top_p)
        kept = out[keep]
        out.fill(0.0)
        out[keep] = kept / kept.sum()
    return out


def next_token_probs(logits: NDArray[Any], temperature: float, top_p: float) -> FloatArray:
    """Batched float64 distribution over the last axis (temperature, then top-p). Never in place.

    Same arithmetic as :func:`probs_into` (exp in float32, normalization in float64).
    """
    _check(temperature, top_p)
    z = np.asarray(logits, dtype=np.float32) * np.float32(1.0 / temperature)
    m = z.max(axis=-1, keepdims=True)
    if not np.isfinite(m).all():
        raise ValueError("logits contain NaN or +inf, or are all -inf")
    z -= m
    p = np.exp(z, out=z).astype(np.float64)
    p /= p.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        flat = p.reshape(-1, p.shape[-1])
        for row in flat:
            keep = nucleus_indices(row, top_p)
            kept = row[keep]
            row.fill(0.0)
            row[keep] = kept / kept.sum()
    return p


def categorical(probs: FloatArray, rng: np.random.Generator) -> IntArray:
    """One draw per row of ``probs`` (B, V), by inverse CDF; a zero-probability token is never drawn."""
    cdf = np.cumsum(probs, axis=1)
    u = np.asarray(rng.random(probs.shape[0]), dtype=np.float64)[:, None] * cdf[:, -1:]
    idx = (cdf <= u).sum(axis=1).astype(np.int64)
    last_nonzero = probs.shape[1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)
    return np.minimum(idx, last_nonzero)


def draw(weights: FloatArray, rng: np.random.Generator, ws: Workspace) -> int:
    """One draw proportional to non-negative ``weights`` (1-D), using ``ws.aux`` as the CDF buffer."""
    cdf = np.cumsum(weights, out=ws.aux)
    u = float(rng.random()) * float(cdf[-1])
    idx = int(np.searchsorted(cdf, u, side="right"))  # first cdf > u: never a zero-weight token
    if idx >= weights.shape[0] or weights[idx] <= 0:
        idx = int(np.flatnonzero(weights > 0)[-1])
    return idx
