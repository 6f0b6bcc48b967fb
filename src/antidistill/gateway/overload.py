"""Load shedding: while a gateway process is saturated, new generation requests are refused at once
(503 ``overloaded``, ``retry-after: 1``, the OpenAI error envelope) instead of queueing until their
clients time out.

The signal is the lag of the path every request takes: a monitor task asks to wake every
``interval_s`` and records how late it woke (the event loop's backlog), then runs a no-op in the
worker-thread pool through which the store is called and records how long that took (the queue of
store calls waiting for a thread; at twice the capacity this is where requests waited, seconds, while
the loop itself was never more than ~150 ms late). The lag counts when it is *sustained*: the
smallest of the last ``SUSTAIN`` samples (a wake-up overdue right now counts as the newest one,
and a wait as long as ``SUSTAIN`` thresholds counts on its own: at the onset of an overload the
probe's wait in the thread pool's queue is the first sign, and it would take seconds to complete).
One short stall (a GC pause, a slow fsync, a neighbour's burst) is followed by prompt samples and
sheds nothing: the requests it held up are served a moment later. A request is refused when at least
``server.overload_min_inflight`` generation requests are in flight and

- the sustained lag exceeds ``server.overload_lag_ms``, or
- more store calls wait for a worker thread than there are threads (the queue that builds first
  at the onset of an overload, long before a probe through it completes; without this rule the
  requests admitted in the first second of a 2x overload waited up to 9.5 s, with it 1.4 s), or
- as many requests are in flight as the current concurrency limit allows. The limit adapts
  (AIMD): while the sustained lag is over the threshold it is cut to threshold / lag of what is in
  flight, kept within 50-90% (at most once per threshold period, never below the minimum); each
  sample under half the threshold while the requests in flight come close to the limit raises it
  by 5%. It starts unbounded.

The first rule reacts within a few samples; the second holds the admitted load where the process
keeps up, so that at twice its capacity it neither queues work until clients time out nor swings
between taking everything and refusing everything. The minimum keeps a process that a noisy
neighbour starves of CPU, but that serves few requests, from refusing them: the load is not its own.

Only ``POST /v1/chat/completions`` and ``POST /v1/completions`` are shed, before authentication and
before the body is read, so a refusal costs about the HTTP parse. A shed request writes no event
(no account is known yet); it is counted in ``antidistill_requests_shed_total``. Admin, health and
metrics routes are never shed. Requests already admitted (and streams already started) are never
interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import anyio
import anyio.to_thread
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from antidistill.errors import GatewayOverloadedError

log = logging.getLogger("antidistill.gateway")

SHED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
RETRY_AFTER_S = 1
MAX_LIMIT = 1_000_000
MIN_DECREASE, MAX_DECREASE = 0.5, 0.9  # a cut keeps this share of what is in flight
INCREASE = 1.05
SUSTAIN = 3  # samples over the threshold in a row before the lag counts
_BODY = orjson.dumps(
    GatewayOverloadedError(
        "The server is overloaded and did not start your request; retry after the retry-after delay."
    ).envelope()
)
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"retry-after", str(RETRY_AFTER_S).encode()),
    (b"retry-after-ms", str(RETRY_AFTER_S * 1000).encode()),
]


def _noop() -> None:
    return None


class OverloadGuard:
    """The lag monitor and the counters (one per app; its task runs in the app's lifespan)."""

    def __init__(self, lag_threshold_s: float, min_inflight: int, interval_s: float = 0.02) -> None:
        if lag_threshold_s < 0 or min_inflight < 1 or interval_s <= 0:
            raise ValueError("need lag_threshold_s >= 0, min_inflight >= 1 and interval_s > 0")
        self.lag_threshold_s = lag_threshold_s
        self.min_inflight = min_inflight
        self.interval_s = interval_s
        self.enabled = lag_threshold_s > 0
        self.inflight = 0
        self.shed = 0
        self.limit = float(MAX_LIMIT)  # adaptive concurrency limit (AIMD), unbounded until overloaded
        self.last_lag_s = 0.0
        self.max_lag_s = 0.0
        self._samples: deque[float] = deque(maxlen=SUSTAIN)
        self._due: float | None = None  # loop time the monitor should be back at (wake-up or probe)
        self._cut_at = -1e18
        self._task: asyncio.Task[None] | None = None
        self._threads: anyio.CapacityLimiter | None = None  # the pool the store is called through
        self._shedding = False

    def lag_s(self) -> float:
        """The sustained lag: the smallest of the last ``SUSTAIN`` samples, where a wake-up or probe
        that is overdue right now counts as the newest sample."""
        samples = list(self._samples)
        lag = min(samples) if len(samples) == SUSTAIN else 0.0
        if self._due is not None:
            overdue = asyncio.get_running_loop().time() - self._due
            if overdue >= SUSTAIN * self.lag_threshold_s:  # one wait as long as SUSTAIN samples
                lag = max(lag, overdue / SUSTAIN)
            elif overdue > lag and len(samples) >= SUSTAIN - 1:
                lag = max(lag, min([*samples[len(samples) - (SUSTAIN - 1) :], overdue]))
        return lag

    def should_shed(self) -> bool:
        if not self.enabled or self.inflight < self.min_inflight:
            return False
        if self.inflight >= self.limit or self.lag_s() > self.lag_threshold_s:
            return True
        threads = self._threads
        return threads is not None and threads.statistics().tasks_waiting > threads.total_tokens

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.ensure_future(self._monitor())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _monitor(self) -> None:
        loop = asyncio.get_running_loop()
        self._threads = anyio.to_thread.current_default_thread_limiter()
        while True:
            self._due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            woke = loop.time()
            loop_lag = woke - self._due
            self._due = woke  # the probe should come back at once; lag_s() sees it overdue meanwhile
            await anyio.to_thread.run_sync(_noop)
            now = loop.time()
            self._due = None
            lag = max(0.0, loop_lag, now - woke)
            self.last_lag_s = lag
            self.max_lag_s = max(self.max_lag_s, lag)
            self._samples.append(lag)
            sustained = self.lag_s()
            self._adapt(lag, sustained, now)
            self._note(self.inflight >= self.min_inflight and sustained > self.lag_threshold_s)

    def _adapt(self, lag: float, sustained: float, now: float) -> None:
        if sustained > self.lag_threshold_s:
            if self.inflight >= self.min_inflight and now - self._cut_at >= self.lag_threshold_s:
                # the further over the threshold, the deeper the cut (50% at twice the threshold)
                factor = min(MAX_DECREASE, max(MIN_DECREASE, self.lag_threshold_s / sustained))
                self.limit = max(float(self.min_inflight), min(self.limit, self.inflight) * factor)
                self._cut_at = now
        elif lag < self.lag_threshold_s / 2 and self.inflight >= self.limit * 0.8:
            self.limit = min(float(MAX_LIMIT), self.limit * INCREASE)

    def _note(self, saturated: bool) -> None:
        if saturated != self._shedding:
            self._shedding = saturated
            if saturated:
                log.warning(
                    "overloaded: requests wait %.0f ms for the loop or a worker thread with %d in flight; "
                    "shedding new requests",
                    self.last_lag_s * 1000,
                    self.inflight,
                )
            else:
                log.warning("no longer overloaded; %d requests shed so far", self.shed)


class OverloadMiddleware:
    """ASGI middleware applying ``OverloadGuard`` to the generation routes."""

    def __init__(self, app: ASGIApp, guard: OverloadGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in SHED_PATHS or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        guard = self.guard
        if guard.should_shed():
            guard.shed += 1
            await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": _BODY})
            return
        guard.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            guard.inflight -= 1
