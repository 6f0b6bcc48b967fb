"""The keyed pseudo-random function behind every scheme: (key, window, token) -> uniform in (0, 1).

Design (device-independent, integer-only, vectorizable):

* ``seed64`` = first 8 bytes (big-endian) of HMAC-SHA256(secret, "antidistill/prf/v1|<tag>"), computed
  once per key and scheme configuration (the tag names the scheme and its window size).
* A splitmix64 chain: ``s0 = seed64``; for each window token ``t``: ``s = fmix64(s + PHI * (t + 1))``;
  finally the candidate token ``v``: ``x = fmix64(s + PHI * (v + 1))``. ``fmix64`` is the splitmix64
  finalizer (a bijection on 64-bit words), so each step is one output of splitmix64 whose state is the
  previous step: for a fixed window the values over all candidates are a splitmix64 stream.
* The top 52 bits give ``((x >> 12) + 0.5) / 2**52``: exact in float64 (53 significant bits), hence
  strictly inside (0, 1), and ``1 - r`` is exact too. (With 53 bits, ``k + 0.5`` would round for
  ``k >= 2**52`` and the largest word would map to exactly 1.0.)

All arithmetic is numpy ``uint64`` with wrap-around (arrays only, so numpy never warns about overflow).
The same chain with the public seed :data:`DEDUP_SEED` gives the unkeyed (window, token) identity used
to deduplicate tuples and to match prompt windows: identical for every key, so it is computed once.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

U64 = NDArray[np.uint64]

PHI = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
S30, S27, S31, S12 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(12)
INV_2_52 = 1.0 / float(1 << 52)
DEDUP_SEED = 0x243F6A8885A308D3  # public (digits of pi): unkeyed tuple identity, never a secret


def _fmix_inplace(y: U64) -> U64:
    """The splitmix64 finalizer applied in place (one scratch buffer; allocation-light on purpose:
    glibc returns freed large buffers to the OS, so every fresh temporary costs page faults)."""
    tmp = np.right_shift(y, S30)
    y ^= tmp
    y *= M1
    np.right_shift(y, S27, out=tmp)
    y ^= tmp
    y *= M2
    np.right_shift(y, S31, out=tmp)
    y ^= tmp
    return y


def fmix64(x: U64) -> U64:
    """The splitmix64 finalizer, elementwise. Returns a new array; ``x`` is not modified."""
    return _fmix_inplace(np.array(x, dtype=np.uint64, copy=True))


def token_mix(tokens: NDArray[np.integer]) -> U64:
    """``PHI * (t + 1)`` as uint64: the per-token increment of the chain (a bijection of the id)."""
    t = np.asarray(tokens)
    if t.size and int(t.min()) < 0:
        raise ValueError("token ids must be non-negative")
    out = t.astype(np.uint64) + np.uint64(1)
    out *= PHI
    return out


def prf_seed(secret: bytes, tag: str) -> int:
    """seed64 of one key for one scheme configuration (the only place the secret is touched)."""
    digest = hmac.new(secret, b"antidistill/prf/v1|" + tag.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big")


def chain(seeds: U64, mixes: U64) -> U64:
    """Run the chain over the columns of ``mixes``.

    ``seeds`` broadcasts against ``mixes[..., 0]`` (e.g. shape (K, 1) against (n, w) mixes gives
    (K, n) results: K keys at once). ``mixes`` holds :func:`token_mix` values, last axis = position.
    """
    s = np.add(np.asarray(seeds, dtype=np.uint64), mixes[..., 0])
    _fmix_inplace(s)
    for j in range(1, mixes.shape[-1]):
        s += mixes[..., j]
        _fmix_inplace(s)
    return s


def chain_at(seeds: U64, mix: U64, starts: NDArray[np.int64], width: int) -> U64:
    """:func:`chain` over the ``width`` tokens starting at each index of ``starts`` in the flat array
    of token mixes ``mix``: gathers one column at a time (memory ~ one column, not ``width``)."""
    s = np.add(np.asarray(seeds, dtype=np.uint64), mix[starts])
    _fmix_inplace(s)
    for j in range(1, width):
        s += mix[starts + j]
        _fmix_inplace(s)
    return s


def to_unit(x: U64) -> NDArray[np.float64]:
    """Top 52 bits of each word as ``(k + 0.5) / 2**52``: exact, strictly inside (0, 1)."""
    u = np.right_shift(x, S12).view(np.int64).astype(np.float64)  # < 2**52: exact, fast path
    u += 0.5
    u *= INV_2_52
    return u


_MASK = (1 << 64) - 1
_PHI_INT, _M1_INT, _M2_INT = int(PHI), int(M1), int(M2)


def _fmix_int(x: int) -> int:
    x ^= x >> 30
    x = (x * _M1_INT) & _MASK
    x ^= x >> 27
    x = (x * _M2_INT) & _MASK
    return x ^ (x >> 31)


def window_state(seed: int, window: Sequence[int] | NDArray[np.integer]) -> int:
    """Chain state after one window (plain Python ints: one window is too small for numpy to pay)."""
    s = seed & _MASK
    for t in window:
        t = int(t)
        if t < 0:
            raise ValueError("token ids must be non-negative")
        s = _fmix_int((s + _PHI_INT * (t + 1)) & _MASK)
    return s


def vocab_values(state: int | U64, vocab_size: int) -> NDArray[np.float64]:
    """PRF values of every candidate ``0..vocab_size-1`` after a window's chain ``state``.

    ``state``: one chain state (int) or an array of B states; the result is (B, vocab_size).
    """
    x = np.arange(1, vocab_size + 1, dtype=np.uint64)
    x *= PHI  # token_mix of 0..vocab_size-1
    x = np.add(np.asarray(state, dtype=np.uint64).reshape(-1, 1), x[None, :])  # (B, V)
    return to_unit(_fmix_inplace(x))


def sliding_mixes(tokens: NDArray[np.integer], width: int) -> U64:
    """(n - width + 1, width) token mixes of every window of ``width`` consecutive tokens."""
    m = token_mix(np.asarray(tokens, dtype=np.int64))
    if m.shape[0] < width:
        return np.empty((0, width), dtype=np.uint64)
    return np.lib.stride_tricks.sliding_window_view(m, width)
