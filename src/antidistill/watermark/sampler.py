"""``WatermarkSampler``: the backends' TokenSampler that marks one sequence with one key.

It knows where the generated part starts (``prompt_len``, or the length of the context at the first
call) and derives, from the context itself, which windows were already used for earlier generated
tokens of this response, so a Gumbel step on a repeated window falls back to a plain draw (the scheme
decides; KGW keeps biasing). Holding no per-sequence state, one instance may serve every sequence
of one request (the ``n`` choices share the prompt); it is not thread-safe. Temperature 0 is greedy:
argmax, no watermark. Presence / frequency penalties and the greedy threshold are the same as the
unwatermarked ``backends.sampling.DefaultSampler``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from antidistill.backends.base import SamplingParams, WatermarkAssignment
from antidistill.backends.sampling import GREEDY_TEMPERATURE, apply_penalties
from antidistill.watermark.keys import WatermarkKey
from antidistill.watermark.schemes.base import KeyedScheme
from antidistill.watermark.schemes.sampling import Workspace


class WatermarkSampler:
    """Implements ``backends.base.TokenSampler`` for the sequences of one request."""

    def __init__(
        self,
        scheme: KeyedScheme,
        key: WatermarkKey,
        prompt_len: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        if key.scheme != scheme.name or key.params != scheme.params():
            raise ValueError(
                f"key {key.key_id} is for {key.scheme} {key.params}, not {scheme.name} {scheme.params()}"
            )
        self.scheme = scheme
        self.key = key
        self._prompt_len = prompt_len
        self._rng = rng
        self._ws: Workspace | None = None  # PRF seed + vocabulary buffers, built on the first step

    @classmethod
    def for_key(
        cls, key: WatermarkKey, prompt_len: int | None = None, rng: np.random.Generator | None = None
    ) -> WatermarkSampler:
        return cls(key.build_scheme(), key, prompt_len, rng)

    def assignment(self) -> WatermarkAssignment:
        """What the gateway hands a backend for this request."""
        return WatermarkAssignment(sampler=self, key_id=self.key.key_id, config_hash=self.key.config_hash)

    def _is_repeated(self, context: Sequence[int]) -> bool:
        """Was the current window already used for an earlier generated token of this response?

        Read from the context itself (no per-sequence state), so one sampler may serve the ``n``
        choices of a request, which share the prompt. O(generated length) per step, in numpy.
        """
        h, n = self.scheme.window, len(context)
        assert self._prompt_len is not None
        start = max(self._prompt_len, h)  # first generated position that had a full window
        if n <= start:
            return False
        windows = np.lib.stride_tricks.sliding_window_view(
            np.asarray(context[start - h : n], dtype=np.int64), h
        )  # rows: the windows of positions start .. n (the last row is the current window)
        return bool((windows[:-1] == windows[-1]).all(axis=1).any())

    def sample(self, context: Sequence[int], logits: NDArray[Any], params: SamplingParams) -> int:
        if self._prompt_len is None:
            self._prompt_len = len(context)
        if params.presence_penalty != 0.0 or params.frequency_penalty != 0.0:
            # same penalties as the unwatermarked DefaultSampler, on a private copy of the logits
            scores = np.array(logits, dtype=np.float64)
            apply_penalties(scores, context[self._prompt_len :], params)
            logits = scores
        if params.temperature < GREEDY_TEMPERATURE:
            return int(np.argmax(logits))  # greedy: no randomness, so no watermark either
        if self._rng is None:
            self._rng = np.random.default_rng(params.seed)
        if self._ws is None or self._ws.vocab_size != logits.shape[-1]:
            self._ws = self.scheme.workspace(self.key, logits.shape[-1])
        repeated = self.scheme.fresh_windows_only and self._is_repeated(context)
        return self.scheme.sample_step(context, logits, params, self._rng, self._ws, repeated=repeated)
