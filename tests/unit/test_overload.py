"""Load shedding (gateway/overload.py): a saturated process refuses new generation requests at once
with 503 + retry-after; other routes, and a lagging process with little load of its own, are served."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from antidistill.gateway.overload import OverloadGuard, OverloadMiddleware


class SlowApp:
    """Answers 200 once ``release`` is set; counts the requests that reached it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.reached = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.reached += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, path: str, method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "method": method, "headers": []}, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def stall(times: int, seconds: float = 0.08) -> None:
    """Block the event loop ``times`` times, letting the monitor take a sample after each."""
    for _ in range(times):
        time.sleep(seconds)
        await asyncio.sleep(0.005)


async def test_sheds_generation_requests_only_while_saturated_and_loaded() -> None:
    guard = OverloadGuard(lag_threshold_s=0.05, min_inflight=2, interval_s=0.01)
    inner = SlowApp()
    app = OverloadMiddleware(inner, guard)
    guard.start()
    try:
        first = [asyncio.ensure_future(call(app, "/v1/chat/completions")) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert guard.inflight == 2
        await stall(1)  # one stall: a blip, not overload
        assert guard.max_lag_s > 0.05 and not guard.should_shed()
        await stall(3)  # the loop keeps stalling: sustained
        time.sleep(0.08)  # and is overdue right now
        assert guard.lag_s() > 0.05 and guard.should_shed()
        status, headers, body = await call(app, "/v1/completions")
        assert status == 503 and headers["retry-after"] == "1" and headers["retry-after-ms"] == "1000"
        err = json.loads(body)["error"]
        assert err["code"] == "overloaded" and err["type"] == "server_error" and "retry" in err["message"]
        assert guard.shed == 1 and inner.reached == 2
        # other routes and methods pass even now
        other = [
            asyncio.ensure_future(call(app, path, method))
            for path, method in (("/healthz", "GET"), ("/v1/admin/accounts/x/decision", "POST"))
        ]
        deadline = time.monotonic() + 5
        while guard.should_shed():  # the monitor catches up: lag back under the threshold
            assert time.monotonic() < deadline, guard.last_lag_s
            await asyncio.sleep(0.01)
        third = asyncio.ensure_future(call(app, "/v1/chat/completions"))
        await asyncio.sleep(0.01)
        assert inner.reached == 5
        inner.release.set()
        results = await asyncio.gather(*first, *other, third)
        assert [r[0] for r in results] == [200] * 5 and guard.inflight == 0
    finally:
        await guard.stop()


async def test_a_lagging_process_with_few_requests_does_not_shed() -> None:
    guard = OverloadGuard(lag_threshold_s=0.02, min_inflight=4, interval_s=0.01)
    inner = SlowApp()
    inner.release.set()
    app = OverloadMiddleware(inner, guard)
    guard.start()
    try:
        await asyncio.sleep(0.05)
        await stall(4)  # a noisy neighbour, not our load
        assert guard.lag_s() > 0.02 and not guard.should_shed()
        assert (await call(app, "/v1/chat/completions"))[0] == 200
    finally:
        await guard.stop()


async def test_disabled_with_a_zero_threshold() -> None:
    guard = OverloadGuard(lag_threshold_s=0.0, min_inflight=1)
    guard.start()
    assert guard._task is None and not guard.enabled
    guard.inflight = 100
    guard.last_lag_s = 10.0
    assert not guard.should_shed()
    await guard.stop()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        OverloadGuard(-1.0, 1)
    with pytest.raises(ValueError):
        OverloadGuard(0.1, 0)


async def test_requests_waiting_for_a_worker_thread_count_as_lag() -> None:
    """At twice the capacity the requests waited for the worker threads the store is called through,
    not for the loop: the probe goes through the same pool and sees that queue."""
    import anyio.to_thread

    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens = limiter.total_tokens
    limiter.total_tokens = 2
    guard = OverloadGuard(lag_threshold_s=0.05, min_inflight=1, interval_s=0.01)
    guard.inflight = 1
    guard.start()
    try:
        await asyncio.sleep(0.1)  # the monitor has its first (prompt) samples
        assert not guard.should_shed()
        stop = time.monotonic() + 1.5

        async def store_calls() -> None:  # 6 callers for 2 threads: ~4 always queued
            while time.monotonic() < stop:
                await anyio.to_thread.run_sync(time.sleep, 0.05)

        busy = [asyncio.ensure_future(store_calls()) for _ in range(6)]
        await asyncio.sleep(0.01)
        assert limiter.statistics().tasks_waiting >= 4 and guard.should_shed()  # the queue, at once
        guard._threads = None  # without the queue rule, the probes' sustained lag says it too
        while not guard.should_shed():  # the loop is free all along; the probes wait for a thread
            assert time.monotonic() < stop, list(guard._samples)
            await asyncio.sleep(0.01)
        assert guard.lag_s() > 0.05
        await asyncio.gather(*busy)
        deadline = time.monotonic() + 5
        while guard.should_shed():
            assert time.monotonic() < deadline, guard.last_lag_s
            await asyncio.sleep(0.01)
        assert guard.max_lag_s >= 0.1 and guard.limit < 1_000_000  # the limit was cut
    finally:
        limiter.total_tokens = tokens
        await guard.stop()
