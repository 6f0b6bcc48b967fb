"""The default (unwatermarked) token sampler: penalties, temperature, nucleus, in numpy.

``DefaultSampler`` implements ``backends.base.TokenSampler``. Order of operations per token:

1. presence / frequency penalties (OpenAI semantics) over the *generated* tokens, i.e.
   ``context[prompt_len:]``: ``logit[t] -= frequency_penalty * count[t] + presence_penalty * (count[t] > 0)``;
2. temperature 0 (or below ``GREEDY_TEMPERATURE``): argmax, lowest id on ties, no randomness;
3. otherwise softmax of ``logits / temperature`` and, when ``top_p < 1``, the nucleus: the smallest set of
   most likely tokens whose probability reaches ``top_p`` (always at least one token), renormalized;
4. one uniform draw from the sampler's own ``numpy.random.Generator`` (inverse CDF).

The generator is per sampler (one sampler per generated sequence) and seeded from ``params.seed`` and
the choice index when a seed is given, so the same seed reproduces the same tokens. The logits array
passed in is never modified (it may be read-only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from antidistill.backends.base import SamplingParams

GREEDY_TEMPERATURE = 1e-5
_NUCLEUS_PROBE = 64  # candidates examined before falling back to a full sort


class DefaultSampler:
    """Temperature / top-p / penalty sampling with a private random generator."""

    def __init__(self, seed: int | None = None, *, index: int = 0, prompt_len: int = 0) -> None:
        entropy = None if seed is None else [int(seed) & 0xFFFFFFFFFFFFFFFF, index]
        self.rng = np.random.default_rng(entropy)
        self.prompt_len = prompt_len

    @classmethod
    def for_request(cls, params: SamplingParams, index: int = 0, prompt_len: int = 0) -> DefaultSampler:
        """The sampler of choice ``index`` of a request: reproducible when ``params.seed`` is set."""
        return cls(params.seed, index=index, prompt_len=prompt_len)

    def sample(self, context: Sequence[int], logits: np.ndarray, params: SamplingParams) -> int:
        scores = np.array(logits, dtype=np.float64)  # always a copy: the caller's array stays untouched
        if scores.ndim != 1 or scores.size == 0:
            raise ValueError(f"logits must be a non-empty vector, got shape {scores.shape}")
        if np.isnan(scores).any():
            raise ValueError("logits contain NaN")
        apply_penalties(scores, context[self.prompt_len :], params)
        if params.temperature < GREEDY_TEMPERATURE:
            return int(np.argmax(scores))
        probs = softmax(scores / params.temperature)
        if params.top_p < 1.0:
            probs = nucleus(probs, params.top_p)
        return draw(probs, float(self.rng.random()))


def apply_penalties(scores: np.ndarray, generated: Sequence[int], params: SamplingParams) -> None:
    """Subtract presence / frequency penalties in place from ``scores`` (a private float64 copy)."""
    if not generated or (params.presence_penalty == 0.0 and params.frequency_penalty == 0.0):
        return
    ids, counts = np.unique(np.asarray(generated, dtype=np.int64), return_counts=True)
    keep = (ids >= 0) & (ids < scores.size)
    ids, counts = ids[keep], counts[keep]
    scores[ids] -= params.frequency_penalty * counts + params.presence_penalty


def softmax(scores: np.ndarray) -> np.ndarray:
    top = np.max(scores)
    if not np.isfinite(top):
        raise ValueError("no token has a finite logit")
    e = np.exp(scores - top)
    return np.asarray(e / e.sum())


def nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Zero all tokens outside the top-p nucleus and renormalize (returns a new array)."""
    order = np.array([int(np.argmax(probs))]) if top_p <= 0.0 else _nucleus_ids(probs, top_p)
    out = np.zeros_like(probs)
    out[order] = probs[order]
    return np.asarray(out / out.sum())


def _nucleus_ids(probs: np.ndarray, top_p: float) -> np.ndarray:
    # The nucleus is usually small: sort only the few most likely tokens, fully sort if they fall short.
    m = min(_NUCLEUS_PROBE, probs.size)
    if m < probs.size:
        cand = np.argpartition(-probs, m - 1)[:m]
        cand = cand[np.lexsort((cand, -probs[cand]))]
        cum = np.cumsum(probs[cand])
        if cum[-1] >= top_p:
            return np.asarray(cand[: int(np.searchsorted(cum, top_p, side="left")) + 1])
    order = np.lexsort((np.arange(probs.size), -probs))  # by probability desc, then id asc
    cum = np.cumsum(probs[order])
    k = min(int(np.searchsorted(cum, top_p, side="left")) + 1, probs.size)
    return np.asarray(order[:k])


def draw(probs: np.ndarray, u: float) -> int:
    """Inverse-CDF draw: the token whose cumulative interval contains ``u`` in [0, 1)."""
    cum = np.cumsum(probs)
    i = int(np.searchsorted(cum, u * cum[-1], side="right"))
    i = min(i, probs.size - 1)
    while probs[i] == 0.0 and i > 0:  # float round-off at the top end: step back to a real token
        i -= 1
    return i
