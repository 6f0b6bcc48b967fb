"""The generation engine of the local backend: one background thread, continuous batching.

Design (continuous batching over the transformers ``DynamicCache``):

* The running batch is a KV cache of shape ``[rows, heads, L, head_dim]`` per layer plus a 2-D
  ``attention_mask [rows, L]``; every row is left-padded (zeros, masked) and holds one sequence.
  ``position_ids`` are each row's count of real tokens (the mask's row sum), so padding never shifts
  positions, and every query row is a real token (no fully masked rows, no NaN from padding).
* Between decode steps, waiting requests are admitted FIFO while the batch has room: each is
  prefilled alone (no padding), its cache repeated ``n`` times for ``n`` choices, and the caches are
  left-padded to a common length and concatenated on the batch axis. Finished, failed and cancelled
  rows are dropped the same way (``index_select``) and fully padded leading columns are trimmed.
* One decode step = one forward pass over all rows with the cache; the last-position logits become a
  read-only float32 numpy array; each row's ``TokenSampler`` picks its next token from its own row.
  The ``n`` rows of a request share the request's sampler when it has one (a ``WatermarkSampler``
  keeps request-wide state: the windows its choices already used) and are stepped in choice order;
  without one, each row gets its own ``DefaultSampler`` seeded from (seed, choice index).
* Results go back to the asyncio side through ``loop.call_soon_threadsafe`` onto a per-request
  ``asyncio.Queue`` of events. An exception fails only the requests it touched (a sampler: its
  request; a forward pass: the rows of that batch) and the thread keeps serving.
* Text: ``TextStream`` (backends/local_text.py) detokenizes each row incrementally and holds back partial
  UTF-8 characters and possible beginnings of stop strings.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from antidistill.backends.base import FinishReason, SamplingParams, TokenSampler
from antidistill.backends.local_text import TextStream
from antidistill.backends.sampling import DefaultSampler
from antidistill.errors import AntidistillError, BackendError, BackendOverloadedError, InvalidRequestError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TextDelta:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ChoiceDone:
    index: int
    text: str  # the last piece of text of this choice (may be empty)
    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class RequestDone:
    prompt_tokens: int
    completion_tokens: int  # summed over the n choices


@dataclass(frozen=True, slots=True)
class RequestFailed:
    error: AntidistillError


EngineEvent = TextDelta | ChoiceDone | RequestDone | RequestFailed


@dataclass(eq=False)
class _Job:
    encode: Callable[[], list[int]]  # runs on the engine thread (tokenizers are not thread-safe)
    params: SamplingParams
    sampler: TokenSampler | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[EngineEvent]
    cancelled: bool = False
    over: bool = False  # done or failed
    live: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def active(self) -> bool:
        return not (self.cancelled or self.over)

    def emit(self, event: EngineEvent) -> None:
        if self.cancelled:
            return
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the consumer's loop is closed
            self.cancelled = True


@dataclass(eq=False)
class _Seq:
    job: _Job
    index: int
    sampler: TokenSampler
    tokens: list[int]  # prompt + generated; the last one is the next input
    max_new: int
    text: TextStream
    generated: int = 0
    done: bool = False


class RequestHandle:
    """The asyncio side of one submitted request: read ``events``; ``cancel()`` when going away."""

    def __init__(self, engine: LocalEngine, job: _Job) -> None:
        self._engine, self._job = engine, job
        self.events = job.events

    def cancel(self) -> None:
        self._engine._cancel(self._job)


class LocalEngine:
    def __init__(
        self,
        model: Any,
        decode: Callable[[Sequence[int]], str],
        eos_ids: Iterable[int],
        *,
        max_batch_size: int = 8,
        max_pending: int = 64,
        max_context_tokens: int = 2048,
    ) -> None:
        self.model = model
        self.max_batch_size, self.max_pending = max_batch_size, max_pending
        self.max_context_tokens = max_context_tokens
        self._decode, self._eos = decode, frozenset(int(e) for e in eos_ids)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._cv = threading.Condition()
        self._pending: collections.deque[_Job] = collections.deque()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._rows: list[_Seq] = []  # engine thread only, like _cache and _mask
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=10_000)  # rows per step
        self.prefills = 0

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch slot (for metrics)."""
        return len(self._pending)

    @property
    def running_rows(self) -> int:
        """Sequences in the running batch (for metrics; read without a lock)."""
        return len(self._rows)

    # ---- asyncio side -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="antidistill-local-engine", daemon=True)
            self._thread.start()

    def submit(
        self, encode: Callable[[], list[int]], params: SamplingParams, sampler: TokenSampler | None = None
    ) -> RequestHandle:
        """Queue a request (call from a running event loop). Raises BackendOverloadedError when full."""
        job = _Job(encode, params, sampler, asyncio.get_running_loop(), asyncio.Queue())
        with self._cv:
            if self._closing or self._thread is None or not self._thread.is_alive():
                raise BackendError("the local model is not running")
            if len(self._pending) >= self.max_pending:
                raise BackendOverloadedError(
                    "the local model is overloaded; retry later", headers={"Retry-After": "1"}
                )
            self._pending.append(job)
            self._cv.notify()
        return RequestHandle(self, job)

    def _cancel(self, job: _Job) -> None:
        job.cancelled = True  # rows of a cancelled job are dropped at the next step boundary
        with self._cv:
            if job in self._pending:
                self._pending.remove(job)

    def close(self, timeout: float | None = 30.0) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # ---- engine thread ------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cv:
                    while not (self._closing or self._pending or self._rows):
                        self._cv.wait()
                    if self._closing:
                        break
                    admitted = self._take_admissible()
                try:
                    for job in admitted:
                        self._admit(job)
                    self._compact()
                    if self._rows:
                        self._step()
                except Exception:
                    log.exception("local generation step failed")
                    error = BackendError("generation failed in the local model")
                    for job in admitted:  # admitted but perhaps not merged into the batch yet
                        self._fail(job, error)
                    self._reset(error)
        with self._cv:
            waiting, self._pending = list(self._pending), collections.deque()
        stop = BackendError("the local model is shutting down")
        for job in waiting:
            job.emit(RequestFailed(stop))
        self._reset(stop)

    def _take_admissible(self) -> list[_Job]:
        rows, out = len(self._rows), []
        while self._pending:
            n = self._pending[0].params.n
            if rows and rows + n > self.max_batch_size:
                break
            out.append(self._pending.popleft())
            rows += n
        return out

    def _admit(self, job: _Job) -> None:
        if job.cancelled:
            return
        try:
            ids = [int(t) for t in job.encode()]
            if not ids:
                raise InvalidRequestError("the prompt is empty")
            if len(ids) >= self.max_context_tokens:
                raise InvalidRequestError(
                    f"the prompt has {len(ids)} tokens; the context holds {self.max_context_tokens}",
                    code="context_length_exceeded",
                )
            logits, cache = self._forward(torch.tensor([ids]), torch.ones((1, len(ids)), dtype=torch.long),
                                          torch.arange(len(ids)).unsqueeze(0), DynamicCache())  # fmt: skip
            self.prefills += 1
        except AntidistillError as e:
            self._fail(job, e)
            return
        except Exception:
            log.exception("prefill failed")
            self._fail(job, BackendError("generation failed in the local model"))
            return
        p, n = job.params, job.params.n
        job.prompt_tokens, job.live = len(ids), n
        max_new = max(1, min(p.max_tokens, self.max_context_tokens - len(ids)))
        seqs = [
            _Seq(job, i, job.sampler or DefaultSampler.for_request(p, i, len(ids)), list(ids), max_new,
                 TextStream(self._decode, p.stop))
            for i in range(n)
        ]  # fmt: skip
        if n > 1:
            cache.batch_repeat_interleave(n)
        self._merge(cache, torch.ones((n, len(ids)), dtype=torch.long), seqs)
        for s in seqs:
            if job.active:
                self._advance(s, logits[0])

    def _step(self) -> None:
        assert self._mask is not None
        rows = list(self._rows)
        positions = self._mask.sum(dim=1, keepdim=True)
        self._mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
        inputs = torch.tensor([[s.tokens[-1]] for s in rows])
        logits, self._cache = self._forward(inputs, self._mask, positions, self._cache)
        self.batch_sizes.append(len(rows))
        for s, row in zip(rows, logits, strict=True):
            if not s.done and s.job.active:
                self._advance(s, row)

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any
    ) -> tuple[np.ndarray, Any]:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         logits_to_keep=1, **{self._cache_kw: cache})  # fmt: skip
        logits = out.logits[:, -1, :].to(torch.float32).numpy()
        logits.setflags(write=False)  # samplers must not modify logits: make it an error
        new_cache = getattr(out, self._cache_kw, None)
        return logits, cache if new_cache is None else new_cache

    def _advance(self, s: _Seq, row: np.ndarray) -> None:
        """Sample one token for ``s`` and emit its text; finish it at eos / stop / length."""
        job = s.job
        try:
            token = int(s.sampler.sample(tuple(s.tokens), row, job.params))
            if not 0 <= token < row.shape[0]:
                raise BackendError(f"the token sampler returned an invalid token id {token}")
        except Exception as e:
            if not isinstance(e, AntidistillError):
                log.exception("token sampler failed")
            self._fail(job, e if isinstance(e, AntidistillError) else BackendError("token sampling failed"))
            return
        s.tokens.append(token)
        s.generated += 1
        job.completion_tokens += 1
        if token in self._eos:
            self._finish(s, "stop")
            return
        delta, stopped = s.text.push(token)
        if delta:
            job.emit(TextDelta(s.index, delta))
        if stopped:
            self._finish(s, "stop")
        elif s.generated >= s.max_new:
            self._finish(s, "length")

    def _finish(self, s: _Seq, reason: FinishReason) -> None:
        tail, stopped = s.text.finish()
        s.done = True
        job = s.job
        job.emit(ChoiceDone(s.index, tail, "stop" if stopped else reason))
        job.live -= 1
        if job.live == 0 and not job.over:
            job.over = True
            job.emit(RequestDone(job.prompt_tokens, job.completion_tokens))

    def _fail(self, job: _Job, error: AntidistillError) -> None:
        if not job.over:
            job.over = True
            job.emit(RequestFailed(error))

    def _reset(self, error: AntidistillError) -> None:
        for s in self._rows:
            self._fail(s.job, error)
        self._rows, self._cache, self._mask = [], None, None

    # ---- batch KV cache -------------------------------------------------------------------------
    def _merge(self, cache: Any, mask: torch.Tensor, seqs: list[_Seq]) -> None:
        if self._cache is None or self._mask is None or not self._rows:
            self._cache, self._mask = cache, mask
        else:
            width = max(self._mask.shape[1], mask.shape[1])
            layers = [
                (
                    torch.cat([_lpad(k1, width), _lpad(k2, width)]),
                    torch.cat([_lpad(v1, width), _lpad(v2, width)]),
                )
                for (k1, v1), (k2, v2) in zip(_kv(self._cache), _kv(cache), strict=True)
            ]
            self._cache = DynamicCache(layers)
            self._mask = torch.cat([_lpad(self._mask, width, dim=1), _lpad(mask, width, dim=1)])
        self._rows.extend(seqs)

    def _compact(self) -> None:
        """Drop finished / failed / cancelled rows and the leading columns nobody needs any more."""
        keep = [i for i, s in enumerate(self._rows) if not s.done and s.job.active]
        if len(keep) == len(self._rows):
            return
        if not keep or self._mask is None:
            self._rows, self._cache, self._mask = [], None, None
            return
        idx = torch.tensor(keep)
        mask = self._mask[idx]
        lead = mask.shape[1] - int(mask.sum(dim=1).max())
        self._cache = DynamicCache([(k[idx, :, lead:], v[idx, :, lead:]) for k, v in _kv(self._cache)])
        self._mask = mask[:, lead:]
        self._rows = [self._rows[i] for i in keep]


def _kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _lpad(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    """Left-pad ``t`` with zeros along ``dim`` (the sequence axis) to ``width``."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    pad = [0, 0] * (t.dim() - dim - 1) + [missing, 0]
    return F.pad(t, pad)
