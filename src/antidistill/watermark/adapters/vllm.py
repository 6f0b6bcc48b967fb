"""vLLM v1 logits processor: watermark answers inside vLLM, one key per request.

Wire contract. The gateway puts one JSON string under ``extra_args["antidistill_wm"]`` of a request's
``SamplingParams`` (over HTTP: the body field ``vllm_xargs``, which vLLM copies into ``extra_args``;
its values must be flat strings or numbers, hence a string). Build it with :func:`vllm_xargs`.
The payload names the key (public id, config hash), the scheme and its parameters, and carries the
key's PRF seed (``seed64`` = HMAC(key secret, scheme tag), 8 bytes): the only thing the schemes need.
The key's 32-byte secret and the master secret never leave the gateway.

Trust model. The vLLM server is part of the owner's deployment, reachable only from the gateway.
A seed lets whoever holds it detect, and also forge or scrub, that one key's mark (not other keys'):
treat it as a secret. With a transport key shared by gateway and vLLM (hex, in the vLLM server's
environment as ``ANTIDISTILL_VLLM_TRANSPORT_KEY``) the seed travels sealed (XOR with an HMAC pad under
a fresh nonce) and the payload is authenticated (HMAC tag), so vLLM's request logs and the network
see no seed and nobody without the key can inject a payload; the processor then rejects unsealed
payloads. ``ANTIDISTILL_VLLM_REQUIRE_WATERMARK=1`` makes vLLM reject requests without a payload.

Where the processor runs. It declares itself argmax-invariant: vLLM then applies it only when it
samples (never to greedy rows), after penalties, temperature and min-p, and before top-k / top-p.
* KGW adds ``delta`` to the green logits of the row's window (already temperature-scaled: the scheme's
  definition). top-k / top-p then act on the biased distribution (the scheme biases inside the
  nucleus of the unbiased one): a small change of the distribution, none of the detection test.
* Gumbel computes ``p = softmax(logits)`` with the request's top-k / top-p applied as vLLM would,
  takes ``argmax r ** (1 / p)`` and sets every other logit to ``-inf``: vLLM's own top-k / top-p /
  sampling then emit that token whatever their settings, so the request is sent with its ordinary
  temperature / top_p and the choice is distortion-free for them. A window already used in the same
  response is left alone (vLLM draws from ``p``), as ``WatermarkSampler`` does.
Requests with temperature below vLLM's greedy threshold (1e-5) are not marked (greedy has no randomness
to carry a mark). The PRF is the integer hash of ``schemes.prf``: same marks as every other adapter.

This module imports without vLLM: the processor class is built on first access of
``WatermarkLogitsProcessor`` (vLLM loads it as ``PROCESSOR_FQCN``); the payload helpers and the
numpy batch logic (:class:`WatermarkBatch`) are framework-free.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray

from antidistill.errors import InvalidRequestError
from antidistill.watermark.keys import WatermarkKey
from antidistill.watermark.schemes import build_scheme, prf
from antidistill.watermark.schemes.base import KeyedScheme
from antidistill.watermark.schemes.gumbel import GumbelScheme
from antidistill.watermark.schemes.kgw import KgwScheme
from antidistill.watermark.schemes.sampling import Workspace, nucleus_indices

log = logging.getLogger(__name__)

EXTRA_ARGS_KEY = "antidistill_wm"
PAYLOAD_VERSION = 1
PROCESSOR_FQCN = "antidistill.watermark.adapters.vllm:WatermarkLogitsProcessor"
TRANSPORT_KEY_ENV = "ANTIDISTILL_VLLM_TRANSPORT_KEY"
REQUIRE_ENV = "ANTIDISTILL_VLLM_REQUIRE_WATERMARK"
GREEDY_EPS = 1e-5  # vLLM's threshold: below it a request is decoded greedily
MAX_PAYLOAD_CHARS = 2048
_PAD_TAG, _MAC_TAG = b"antidistill/vllm/pad/v1|", b"antidistill/vllm/mac/v1|"


class PayloadError(InvalidRequestError, ValueError):
    """A bad watermark payload. A ValueError, so vLLM answers HTTP 400 instead of failing."""

    code = "bad_watermark_payload"


# ---- payload (gateway side builds, vLLM side parses) ------------------------------------------


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _pad(transport_key: bytes, nonce: bytes) -> int:
    return int.from_bytes(hmac.new(transport_key, _PAD_TAG + nonce, hashlib.sha256).digest()[:8], "big")


def _mac(transport_key: bytes, body: Mapping[str, Any]) -> str:
    return hmac.new(transport_key, _MAC_TAG + _canonical(body), hashlib.sha256).hexdigest()[:32]


def watermark_payload(
    key: WatermarkKey, transport_key: bytes | None = None, *, nonce: bytes | None = None
) -> str:
    """The ``extra_args`` value marking one request with ``key`` (sealed when a transport key is given)."""
    scheme = key.build_scheme()
    seed = scheme.seed(key)
    body: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "key_id": key.key_id,
        "config_hash": key.config_hash,
        "scheme": scheme.name,
        "params": scheme.params(),
    }
    if transport_key is None:
        body["seed"] = f"{seed:016x}"
    else:
        n = nonce if nonce is not None else secrets.token_bytes(12)
        body["nonce"] = n.hex()
        body["seed_sealed"] = f"{seed ^ _pad(transport_key, n):016x}"
        body["mac"] = _mac(transport_key, body)
    return _canonical(body).decode("ascii")


def vllm_xargs(key: WatermarkKey, transport_key: bytes | None = None) -> dict[str, str]:
    """``SamplingParams(extra_args=...)`` offline, or the HTTP body field ``vllm_xargs``."""
    return {EXTRA_ARGS_KEY: watermark_payload(key, transport_key)}


def parse_transport_key(text: str | None) -> bytes | None:
    """The transport key from its hex form (at least 16 bytes); None or empty: no key."""
    if not text:
        return None
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise ValueError(f"{TRANSPORT_KEY_ENV} must be hex") from None
    if len(raw) < 16:
        raise ValueError(f"{TRANSPORT_KEY_ENV} must hold at least 16 bytes (32 hex digits)")
    return raw


@dataclass(frozen=True, slots=True)
class RequestWatermark:
    """What the processor needs for one request (``seed`` is kept out of repr)."""

    key_id: str
    scheme: KeyedScheme
    seed: int = field(repr=False)


def _hex_int(value: Any, digits: int, name: str) -> int:
    if not isinstance(value, str) or len(value) != digits:
        raise PayloadError(f"watermark payload field {name!r} must be {digits} hex digits")
    try:
        return int(value, 16)
    except ValueError:
        raise PayloadError(f"watermark payload field {name!r} must be hex") from None


def parse_payload(value: Any, transport_key: bytes | None) -> RequestWatermark:
    """Check and open one payload. Raises PayloadError (a ValueError) with a client-safe message."""
    if isinstance(value, str):
        if len(value) > MAX_PAYLOAD_CHARS:
            raise PayloadError("watermark payload too long")
        try:
            value = json.loads(value)
        except ValueError:
            raise PayloadError("watermark payload is not JSON") from None
    if not isinstance(value, dict) or value.get("v") != PAYLOAD_VERSION:
        raise PayloadError(f"watermark payload must be a JSON object with v={PAYLOAD_VERSION}")
    if transport_key is not None:  # authenticate before reading anything else
        if "seed" in value or "seed_sealed" not in value:
            raise PayloadError("this server accepts sealed watermark payloads only")
        mac, body = value.get("mac"), {k: v for k, v in value.items() if k != "mac"}
        if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(transport_key, body)):
            raise PayloadError("watermark payload authentication failed")
        nonce = bytes.fromhex(f"{_hex_int(value.get('nonce'), 24, 'nonce'):024x}")
        seed = _hex_int(value.get("seed_sealed"), 16, "seed_sealed") ^ _pad(transport_key, nonce)
    elif "seed_sealed" in value:
        raise PayloadError(f"sealed watermark payload, but {TRANSPORT_KEY_ENV} is not set on this server")
    else:
        seed = _hex_int(value.get("seed"), 16, "seed")
    key_id, name, params = value.get("key_id"), value.get("scheme"), value.get("params", {})
    if not isinstance(key_id, str) or not isinstance(name, str) or not isinstance(params, dict):
        raise PayloadError("watermark payload needs key_id, scheme and params")
    try:
        scheme = build_scheme(name, params)
    except Exception as exc:  # ConfigError: unknown scheme or bad parameters
        raise PayloadError(f"watermark payload: {exc}") from None
    return RequestWatermark(key_id, scheme, seed)


def request_watermark(
    params: Any, transport_key: bytes | None, *, required: bool = False
) -> RequestWatermark | None:
    """The watermark of a request from its vLLM ``SamplingParams`` (None: not marked)."""
    extra = getattr(params, "extra_args", None) or {}
    value = extra.get(EXTRA_ARGS_KEY) if isinstance(extra, Mapping) else None
    if value is None:
        if required:
            raise PayloadError("this server serves watermarked requests only (no antidistill_wm payload)")
        return None
    return parse_payload(value, transport_key)


def settings_from_env(environ: Mapping[str, str] | None = None) -> tuple[bytes | None, bool]:
    """(transport key, required) as the vLLM server's environment configures them."""
    env = os.environ if environ is None else environ
    required = env.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")
    return parse_transport_key(env.get(TRANSPORT_KEY_ENV)), required


# ---- per-batch state and the numpy work ---------------------------------------------------------


@dataclass(slots=True)
class _Row:
    wm: RequestWatermark
    tail: tuple[int, ...]  # last `window` prompt tokens
    output: Sequence[int]  # vLLM's live list of this request's generated tokens
    temperature: float
    top_k: int
    top_p: float
    seen: set[tuple[int, ...]] = field(default_factory=set)  # windows of earlier generated tokens
    upto: int = 0  # combined positions whose windows are in `seen`

    def window(self) -> tuple[int, ...] | None:
        """The current window (last ``h`` tokens of prompt tail + output), None if not full/known."""
        h, t, n_out = self.wm.scheme.window, len(self.tail), len(self.output)
        if t + n_out < h or (n_out and self.output[-1] < 0):  # short, or an async placeholder
            return None
        if n_out >= h:
            return tuple(int(x) for x in self.output[n_out - h :])
        return self.tail[t - (h - n_out) :] + tuple(int(x) for x in self.output)

    def fresh(self, current: tuple[int, ...]) -> bool:
        """Was ``current`` not yet used by an earlier generated token? (Updates ``seen``.)"""
        h, t, n = self.wm.scheme.window, len(self.tail), len(self.tail) + len(self.output)
        if n < self.upto:  # tokens were discarded: rebuild
            self.seen.clear()
            self.upto = 0
        for pos in range(max(t, h, self.upto), n):  # generated positions with a full window
            start = pos - h
            win = [self.tail[j] if j < t else self.output[j - t] for j in range(start, pos)]
            self.seen.add(tuple(int(x) for x in win))
        self.upto = max(self.upto, n)
        return current not in self.seen


class WatermarkBatch:
    """Framework-free core of the processor: request state by batch index, and :meth:`apply`."""

    def __init__(self, transport_key: bytes | None = None) -> None:
        self.transport_key = transport_key
        self.rows: dict[int, _Row] = {}
        self._ws: Workspace | None = None
        self._rng = np.random.default_rng(0)  # Gumbel's choice ignores it (deterministic)

    def add(
        self, index: int, params: Any, prompt_ids: Sequence[int] | None, output_ids: Sequence[int]
    ) -> None:
        self.rows.pop(index, None)
        try:
            wm = request_watermark(params, self.transport_key, required=False)
        except PayloadError as exc:  # validate_params rejects these earlier; never crash the engine
            log.error("request at batch index %d is served unmarked: %s", index, exc.message)
            return
        if wm is None:
            return
        h = wm.scheme.window
        tail = tuple(int(x) for x in (prompt_ids or ())[-h:])
        top_k = int(getattr(params, "top_k", 0) or 0)
        top_p = float(getattr(params, "top_p", 1.0) or 1.0)
        self.rows[index] = _Row(wm, tail, output_ids, float(params.temperature), top_k, top_p)

    def update(self, batch_update: Any) -> None:
        """Apply a vLLM ``BatchUpdate`` (removed, then added, then moved), duck-typed."""
        if not batch_update:
            return
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, prompt_ids, output_ids in batch_update.added:
            self.add(index, params, prompt_ids, output_ids)
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
            if ra is not None:
                self.rows[b] = ra
            if rb is not None and getattr(direction, "name", "") == "SWAP":
                self.rows[a] = rb

    def _workspace(self, vocab_size: int, seed: int) -> Workspace:
        ws = self._ws
        if ws is None or ws.vocab_size != vocab_size:
            ws = self._ws = Workspace(vocab_size, seed)
        ws.seed = seed
        return ws

    def apply(self, logits: NDArray[np.float32]) -> None:
        """Mark the rows of temperature-scaled ``logits`` (B, V) in place (one row at a time, in
        reused vocabulary-sized buffers: faster than (B, V) temporaries, which page-fault)."""
        for index, row in self.rows.items():
            if index >= logits.shape[0] or row.temperature < GREEDY_EPS:
                continue
            window = row.window()
            if window is None:
                continue
            scheme = row.wm.scheme
            if isinstance(scheme, KgwScheme):
                ws = self._workspace(logits.shape[1], row.wm.seed)
                green = _green_mask(ws, prf.window_state(row.wm.seed, window), scheme.gamma)
                z = logits[index]
                np.add(z, np.float32(scheme.delta), out=z, where=green)
            elif isinstance(scheme, GumbelScheme) and row.fresh(window):
                self._gumbel(logits[index], row, window)

    def _gumbel(self, z: NDArray[np.float32], row: _Row, window: tuple[int, ...]) -> None:
        m = z.max()
        if not np.isfinite(m):
            return
        ws = self._workspace(z.shape[0], row.wm.seed)
        np.subtract(z, m, out=ws.z32)
        np.exp(ws.z32, out=ws.z32)  # float32 exp (SIMD), as schemes.sampling.probs_into
        probs = ws.probs
        np.copyto(probs, ws.z32)
        if 0 < row.top_k < probs.shape[0]:  # vLLM order: top-k, then top-p of what is left
            probs[probs < np.partition(probs, probs.shape[0] - row.top_k)[probs.shape[0] - row.top_k]] = 0.0
        probs /= probs.sum()
        if row.top_p < 1.0:
            keep = nucleus_indices(probs, row.top_p)
            kept = probs[keep]
            probs.fill(0.0)
            probs[keep] = kept / kept.sum()
        choice = row.wm.scheme.choose(probs, ws.prf_values(window), self._rng, ws)
        chosen = z[choice]
        z.fill(-np.inf)
        z[choice] = chosen


@functools.lru_cache(maxsize=64)
def _green_threshold(gamma: float) -> np.uint64:
    """The 64-bit word ``X`` with ``to_unit(x) < gamma  <=>  x < X`` (exact).

    ``to_unit(x) = ((x >> 12) + 0.5) / 2**52`` exactly, so green <=> ``k = x >> 12 < gamma * 2**52 - 1/2``
    <=> ``k < c = ceil(gamma * 2**52 - 1/2)`` <=> ``x < c << 12``.
    """
    c = math.ceil(Fraction(gamma) * (1 << 52) - Fraction(1, 2))
    return np.uint64(min(max(c, 0), (1 << 52) - 1) << 12)


def _green_mask(ws: Workspace, state: int, gamma: float) -> NDArray[np.bool_]:
    """KGW green list of one window (chain ``state``) into ``ws.mask``: the PRF words compared with
    an exact integer threshold, which skips the conversion to floats."""
    w, t = ws.words, ws.scratch
    np.add(ws.mix, np.uint64(state), out=w)
    np.right_shift(w, prf.S30, out=t)
    w ^= t
    w *= prf.M1
    np.right_shift(w, prf.S27, out=t)
    w ^= t
    w *= prf.M2
    np.right_shift(w, prf.S31, out=t)
    w ^= t
    return np.less(w, _green_threshold(gamma), out=ws.mask)


# ---- the vLLM class, built on first access (vLLM is not a dependency of the main install) -------


def _build_processor_class() -> type:
    import torch
    from vllm.v1.sample.logits_processor import LogitsProcessor

    class WatermarkLogitsProcessor(LogitsProcessor):
        """antidistill watermark for vLLM v1 (see the module docstring)."""

        @classmethod
        def validate_params(cls, sampling_params: Any) -> None:
            transport_key, required = settings_from_env()
            request_watermark(sampling_params, transport_key, required=required)

        def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
            self.batch = WatermarkBatch(settings_from_env()[0])  # `required` is checked by validate_params

        def is_argmax_invariant(self) -> bool:
            return True  # only sampled rows are marked: greedy decoding is never changed

        def update_state(self, batch_update: Any) -> None:
            self.batch.update(batch_update)

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            if not self.batch.rows:
                return logits
            if logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.is_contiguous():
                self.batch.apply(logits.numpy())  # shares memory: marked in place
                return logits
            host = logits.detach().to("cpu", torch.float32).numpy().copy()
            self.batch.apply(host)
            logits.copy_(torch.from_numpy(host).to(logits.device, logits.dtype))
            return logits

    WatermarkLogitsProcessor.__module__ = __name__
    return WatermarkLogitsProcessor


def __getattr__(name: str) -> Any:
    if name == "WatermarkLogitsProcessor":
        cls = _build_processor_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
