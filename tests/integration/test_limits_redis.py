"""RedisLimiter against the real Redis on 127.0.0.1:6379 (``-m redis``): replicas share one limit
exactly, settle/cancel, key TTLs, and the circuit breaker through outages (closed port, a proxy that
is cut or black-holes bytes) and recovery.

Redis down makes each test FAIL at once (one 2 s connectivity check per session), never hang.
Every test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import pytest

from antidistill.clock import ManualClock
from antidistill.limits import LimitSpec, RedisLimiter, Reservation
from tests.integration.conftest import REDIS_URL, _sync_client

pytestmark = pytest.mark.redis

CALL_BOUND_S = 0.3  # no limiter call may take longer, whatever Redis does (timeouts are 50 ms)


def _limiter(prefix: str, url: str = REDIS_URL, **kw: Any) -> RedisLimiter:
    return RedisLimiter.from_url(url, prefix=prefix, **kw)


@contextlib.asynccontextmanager
async def _replicas(n: int, prefix: str, **kw: Any) -> AsyncIterator[list[RedisLimiter]]:
    lims = [_limiter(prefix, **kw) for _ in range(n)]
    try:
        yield lims
    finally:
        for lim in lims:
            await lim.aclose()


async def _timed_reserve(lim: RedisLimiter, subject: str, spec: LimitSpec, tokens: int = 0) -> Reservation:
    t = time.perf_counter()
    r = await lim.reserve(subject, spec, tokens)
    elapsed = time.perf_counter() - t
    assert elapsed < CALL_BOUND_S, f"reserve took {elapsed:.3f}s (source {r.source})"
    return r


# shared limits ------------------------------------------------------------------------------
# Generous budgets here: this checks Redis semantics, and 1000 concurrent calls on one event loop
# can queue past 20 ms, which would (correctly) trip the breaker.
EXACT = {"timeout_s": 5.0, "latency_budget_s": 5.0}


async def test_two_replicas_share_one_request_limit_exactly(prefix: str) -> None:
    clock = ManualClock()  # frozen time: nothing drains during the test
    async with _replicas(2, prefix, clock=clock, **EXACT) as (a, b):
        spec = LimitSpec(rpm=200)
        got = await asyncio.gather(*(lim.reserve("acct", spec, 0) for _ in range(500) for lim in (a, b)))
    assert {r.source for r in got} == {"redis"}
    assert sum(r.allowed for r in got) == 200
    assert sum(r.allowed for r in got[0::2]) > 0 and sum(r.allowed for r in got[1::2]) > 0
    remaining = sorted(r.requests_quota.remaining for r in got if r.allowed and r.requests_quota)
    assert remaining == list(range(200))  # every admitted request saw a distinct count


async def test_replicas_share_a_token_limit_on_redis_time(prefix: str) -> None:
    async with _replicas(2, prefix, **EXACT) as (a, b):  # server TIME; an hour period: drain negligible
        spec = LimitSpec(tpm=10_000, period_s=3600.0)
        got = await asyncio.gather(*(lim.reserve("acct", spec, 7) for _ in range(1000) for lim in (a, b)))
        assert sum(r.allowed for r in got) == 10_000 // 7
        denied = next(r for r in got if not r.allowed)
        assert denied.reason == "tokens" and denied.retry_after_s is not None
        assert 0 < denied.retry_after_s < 7 * 3600 / 10_000 + 0.1


async def test_budget_replenishes_and_key_expires(prefix: str) -> None:
    clock = ManualClock()
    async with _replicas(2, prefix, clock=clock) as (a, b):
        spec = LimitSpec(rpm=3)
        assert [(await lim.reserve("s", spec, 0)).allowed for lim in (a, b, a, b)] == [True] * 3 + [False]
        d = await b.reserve("s", spec, 0)
        assert d.retry_after_s == pytest.approx(20.0) and b.headers(d)["retry-after"] == "20"
        with _sync_client() as r:
            ttl_ms = r.pttl(f"{prefix}:s")
        assert 60_000 < ttl_ms <= 61_000  # drains in 60 s, + 1 s slack
        clock.advance(20.0)
        assert (await a.reserve("s", spec, 0)).allowed
        assert not (await b.reserve("s", spec, 0)).allowed


async def test_settle_refunds_and_charges_across_replicas(prefix: str) -> None:
    clock = ManualClock()
    async with _replicas(2, prefix, clock=clock) as (a, b):
        spec = LimitSpec(rpm=100, tpm=1000)
        r = await a.reserve("s", spec, 800)
        assert not (await b.reserve("s", spec, 300)).allowed
        assert await a.settle(r, 100) == -700
        assert await a.settle(r, 5) == 0  # once only
        r2 = await b.reserve("s", spec, 900)
        assert r2.allowed and r2.tokens_quota is not None and r2.tokens_quota.remaining == 0
        assert await b.settle(r2, 1400) == 500  # a stream that ran long: charged into debt
        d = await a.reserve("s", spec, 0)
        assert not d.allowed and d.reason == "tokens" and d.retry_after_s == pytest.approx(30.0)
        clock.advance(30.0)
        assert (await a.reserve("s", spec, 0)).allowed


async def test_cancel_returns_everything_and_deletes_drained_key(prefix: str) -> None:
    async with _replicas(1, prefix, clock=ManualClock()) as (a,):
        spec = LimitSpec(rpm=1, tpm=100)
        r = await a.reserve("s", spec, 60)
        with _sync_client() as c:
            assert c.exists(f"{prefix}:s") == 1
            await a.cancel(r)
            assert c.exists(f"{prefix}:s") == 0  # drained to zero == fresh: nothing stored
        assert (await a.reserve("s", spec, 100)).allowed


async def test_every_key_has_a_ttl(prefix: str) -> None:
    async with _replicas(1, prefix) as (a,):
        for i in range(50):
            r = await a.reserve(f"s{i}", LimitSpec(rpm=10, tpm=5000), 100)
            await a.settle(r, 300)
    with _sync_client() as c:
        keys = list(c.scan_iter(match=f"{prefix}:*"))
        assert len(keys) == 50 and all(0 < c.pttl(k) <= 61_000 for k in keys)


# circuit breaker ----------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_redis_falls_back_fast_to_the_local_share(prefix: str) -> None:
    # production breaker settings on the system clock: opens after failures lasting min_outage_s (0.2 s)
    lim = _limiter(prefix, url=f"redis://127.0.0.1:{_closed_port()}/0", expected_replicas=2, cooldown_s=60.0)
    try:
        spec, got, start = LimitSpec(rpm=10), [], time.perf_counter()
        while lim.state == "closed":
            assert time.perf_counter() - start < 2.0, "the circuit never opened"
            got.append(await _timed_reserve(lim, "s", spec))
            await asyncio.sleep(0.01)
        assert 0.2 <= time.perf_counter() - start < 1.0
        failed = lim.stats()["redis_failed"]
        got += [await _timed_reserve(lim, "s", spec) for _ in range(10)]
        assert lim.stats()["redis_failed"] == failed  # open: no more Redis calls
        assert {r.source for r in got} == {"fallback"}
        assert sum(r.allowed for r in got) == 5  # 10 / 2 replicas
        assert await lim.settle(got[0], 0) == 0  # rpm-only: nothing to correct, no error
    finally:
        await lim.aclose()


class _FlakyProxy:
    """A TCP proxy in front of Redis that a test can cut (refused/reset), black-hole (bytes vanish,
    so calls time out) and restore."""

    def __init__(self) -> None:
        u = urlparse(REDIS_URL)
        self._target = (u.hostname or "127.0.0.1", u.port or 6379)
        self.blackhole = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            w.transport.abort()
            self._writers.discard(w)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if not self.blackhole:
                    dst.write(data)
                    await dst.drain()
        finally:
            dst.transport.abort()


@pytest.mark.parametrize("outage", ["cut", "blackhole"])
async def test_breaker_opens_on_outage_and_closes_when_redis_is_back(prefix: str, outage: str) -> None:
    proxy = _FlakyProxy()
    await proxy.start()
    clock = ManualClock()  # drives the cool-down (and the limiter's time); frozen, so min_outage_s=0
    lim = _limiter(prefix, url=proxy.url, clock=clock, expected_replicas=2, min_outage_s=0.0, cooldown_s=5.0)
    spec = LimitSpec(rpm=20)
    try:
        before = [await _timed_reserve(lim, "s", spec) for _ in range(5)]
        assert {r.source for r in before} == {"redis"}
        if outage == "cut":
            await proxy.stop()
        else:
            proxy.blackhole = True
        during = await asyncio.gather(*(_timed_reserve(lim, "s", spec) for _ in range(30)))
        assert {r.source for r in during} == {"fallback"} and lim.state == "open"
        assert sum(r.allowed for r in during) == 10  # local share: 20 / 2
        clock.advance(5.0)
        assert lim.state == "half_open"
        probe = await _timed_reserve(lim, "s", spec)  # Redis still down: the probe fails, re-opens
        assert probe.source == "fallback" and lim.state == "open"

        if outage == "cut":
            await proxy.start()  # same port
        else:
            proxy.blackhole = False
        assert (await _timed_reserve(lim, "s", spec)).source == "fallback"  # still cooling down
        clock.advance(5.0)
        back = await _timed_reserve(lim, "s", spec)
        assert back.source == "redis" and lim.state == "closed"
        # Redis kept its state: 5 used, 10 s x 20/60 drained, +1 -> 2.67 used (the fallback's is not copied)
        assert back.requests_quota is not None and back.requests_quota.remaining == 17
        assert lim.stats()["breaker_opens"] == 2
    finally:
        await lim.aclose()
        with contextlib.suppress(Exception):
            await proxy.stop()


async def test_settle_during_outage_charges_locally_and_never_hangs(prefix: str) -> None:
    proxy = _FlakyProxy()
    await proxy.start()
    lim = _limiter(
        prefix, url=proxy.url, clock=ManualClock(), failure_threshold=1, min_outage_s=0, cooldown_s=60
    )
    spec = LimitSpec(tpm=1000)
    try:
        r = await lim.reserve("s", spec, 100)
        assert r.source == "redis"
        proxy.blackhole = True
        t = time.perf_counter()
        assert await lim.settle(r, 1100) == 1000  # Redis can't take it: the charge goes local
        assert time.perf_counter() - t < CALL_BOUND_S
        d = await _timed_reserve(lim, "s", spec, 1)
        assert d.source == "fallback" and not d.allowed and d.reason == "tokens"
    finally:
        await lim.aclose()
        with contextlib.suppress(Exception):
            await proxy.stop()
