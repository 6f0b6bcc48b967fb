"""Synthetic language models and batched watermarked generation, for tests and benchmarks.

``generate_batch`` runs the same scheme math as ``WatermarkSampler`` (PRF, ``select``, plain draws on
repeated windows for schemes that need fresh windows) on B sequences at once, so statistical tests
over tens of thousands of documents stay fast. No model, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import special

from antidistill.watermark.schemes import prf
from antidistill.watermark.schemes.base import KeyedScheme, SecretKey
from antidistill.watermark.schemes.sampling import categorical, next_token_probs

IntArray = NDArray[np.int64]
LogitsFn = Callable[[IntArray], NDArray[np.float32]]  # (B, t) contexts -> (B, V) logits


@dataclass
class SyntheticLM:
    """Logits ``sigma * N(0, 1)`` per token: fresh per step (``context=0``, from ``rng``) or a fixed
    function of the last ``context`` tokens (repeated contexts give repeated distributions)."""

    vocab_size: int = 1000
    sigma: float = 4.0
    context: int = 0
    seed: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def __call__(self, contexts: IntArray) -> NDArray[np.float32]:
        b = contexts.shape[0]
        if self.context == 0:
            z = self.rng.standard_normal((b, self.vocab_size), dtype=np.float32)
            z *= np.float32(self.sigma)
            return z
        states = prf.chain(np.array(self.seed, dtype=np.uint64), prf.token_mix(contexts[:, -self.context :]))
        u = prf.vocab_values(states, self.vocab_size)
        return (self.sigma * special.ndtri(u)).astype(np.float32)


def mean_entropy(lm: SyntheticLM, n: int = 2000, temperature: float = 1.0) -> float:
    """Average next-token entropy (nats) of ``lm``'s distributions, estimated on ``n`` draws."""
    contexts = np.random.default_rng(lm.seed + 1).integers(0, lm.vocab_size, (n, max(1, lm.context)))
    p = next_token_probs(lm(contexts), temperature, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-np.nansum(p * np.log(p), axis=1).mean())


def generate_batch(
    scheme: KeyedScheme | None,
    key: SecretKey | None,
    next_logits: LogitsFn,
    prompts: IntArray,
    length: int,
    rng: np.random.Generator,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> IntArray:
    """Generate ``length`` tokens after each row of ``prompts`` (B, P); ``scheme=None``: unmarked.

    Returns the generated tokens (B, length).
    """
    b, p_len = prompts.shape
    ctx = np.concatenate((prompts, np.zeros((b, length), dtype=np.int64)), axis=1).astype(np.int64)
    h = scheme.window if scheme is not None else 0
    seed = np.array(scheme.seed(key), dtype=np.uint64) if scheme is not None and key is not None else None
    used = np.zeros((b, length), dtype=np.uint64)  # unkeyed hashes of the windows used so far
    for t in range(length):
        pos = p_len + t
        probs = next_token_probs(next_logits(ctx[:, :pos]), temperature, top_p)
        if scheme is None or seed is None or pos < h:
            ctx[:, pos] = categorical(probs, rng)
            continue
        win = prf.token_mix(ctx[:, pos - h : pos])
        plain = np.zeros(b, dtype=bool)
        if scheme.fresh_windows_only:
            cur = prf.chain(np.array(prf.DEDUP_SEED, dtype=np.uint64), win)
            plain = (used[:, :t] == cur[:, None]).any(axis=1)
            used[:, t] = cur
        choice = np.empty(b, dtype=np.int64)
        marked = ~plain
        if marked.any():
            values = prf.vocab_values(prf.chain(seed, win[marked]), probs.shape[1])
            choice[marked] = scheme.select(probs[marked], values, rng)
        if plain.any():
            choice[plain] = categorical(probs[plain], rng)
        ctx[:, pos] = choice
    return ctx[:, p_len:]
