"""transformers adapters: watermark ``model.generate`` through LogitsProcessors.

* :class:`KgwLogitsProcessor` adds ``delta`` to the green logits of each row's window (LeftHash).
* :class:`GumbelLogitsProcessor` makes the Gumbel-max choice itself (Gumbel is a sampling rule, not
  a bias): it returns ``-inf`` everywhere except the chosen token, so whatever transformers does next
  (sampling or argmax) emits that token.

``generate`` appends user processors after its own temperature / top-k / top-p warpers, so both see
the warped scores (with ``do_sample=True``); the Gumbel choice is made from ``softmax(scores)``.
Both return a NEW tensor and never modify ``input_ids`` or ``scores``. The PRF is the same integer
hash as everywhere else (numpy on CPU), never a torch RNG, so marks do not depend on the device.
Use one processor instance per ``generate`` call (the Gumbel one tracks windows per row).

Alternatively a backend that owns its decoding loop uses ``WatermarkSampler`` directly.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
from transformers import LogitsProcessor

from antidistill.watermark.keys import WatermarkKey
from antidistill.watermark.schemes import prf
from antidistill.watermark.schemes.gumbel import GumbelScheme
from antidistill.watermark.schemes.kgw import KgwScheme
from antidistill.watermark.schemes.sampling import categorical


def _row_values(seed: int, ids: np.ndarray, window: int, vocab_size: int) -> np.ndarray:
    """(B, V) PRF values of every candidate after each row's last ``window`` tokens."""
    states = prf.chain(np.array(seed, dtype=np.uint64), prf.token_mix(ids[:, ids.shape[1] - window :]))
    return prf.vocab_values(states, vocab_size)


class KgwLogitsProcessor(LogitsProcessor):
    def __init__(self, key: WatermarkKey) -> None:
        scheme = key.build_scheme()
        if not isinstance(scheme, KgwScheme):
            raise ValueError(f"key {key.key_id} is a {key.scheme} key, not kgw")
        self.key_id, self.config_hash = key.key_id, key.config_hash
        self.scheme = scheme
        self._seed = scheme.seed(key)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids = input_ids.detach().to("cpu").numpy().astype(np.int64, copy=True)
        bias = np.zeros(tuple(scores.shape), dtype=np.float32)
        if ids.shape[1] >= self.scheme.window:
            green = _row_values(self._seed, ids, self.scheme.window, scores.shape[-1]) < self.scheme.gamma
            bias[green] = self.scheme.delta
        out = scores + torch.from_numpy(bias).to(device=scores.device, dtype=scores.dtype)  # new tensor
        return cast(torch.FloatTensor, out)


class GumbelLogitsProcessor(LogitsProcessor):
    def __init__(self, key: WatermarkKey, rng: np.random.Generator | None = None) -> None:
        scheme = key.build_scheme()
        if not isinstance(scheme, GumbelScheme):
            raise ValueError(f"key {key.key_id} is a {key.scheme} key, not gumbel")
        self.key_id, self.config_hash = key.key_id, key.config_hash
        self.scheme = scheme
        self._seed = scheme.seed(key)
        self._rng = rng if rng is not None else np.random.default_rng()
        self._seen: list[set[tuple[int, ...]]] = []
        self._last_len = -1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids = input_ids.detach().to("cpu").numpy().astype(np.int64, copy=True)
        b, n = ids.shape
        if n <= self._last_len or len(self._seen) != b:  # a new generate() call
            self._seen = [set() for _ in range(b)]
        self._last_len = n
        z = scores.detach().to("cpu", torch.float64).numpy()
        finite_max = np.where(np.isfinite(z), z, -np.inf).max(axis=1, keepdims=True)
        probs = np.exp(z - finite_max)
        probs /= probs.sum(axis=1, keepdims=True)
        choice = categorical(probs, self._rng)  # plain draws; replaced below where the window is fresh
        h = self.scheme.window
        if n >= h:
            fresh = np.ones(b, dtype=bool)
            for row in range(b):
                win = tuple(int(t) for t in ids[row, n - h :])
                fresh[row] = win not in self._seen[row]
                self._seen[row].add(win)
            if fresh.any():
                values = _row_values(self._seed, ids[fresh], h, probs.shape[1])
                choice[fresh] = self.scheme.select(probs[fresh], values, self._rng)
        out = torch.full_like(scores, -math.inf)
        rows = torch.arange(b, device=scores.device)
        out[rows, torch.from_numpy(choice).to(scores.device)] = 0.0
        return cast(torch.FloatTensor, out)
