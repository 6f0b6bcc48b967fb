"""LocalLimiter, the shared arithmetic, headers, the circuit breaker, and RedisLimiter's fallback path
with a fake (broken or hanging) client. No I/O: time is a ManualClock."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import pytest

from antidistill.clock import ManualClock
from antidistill.errors import ConfigError, RateLimitError
from antidistill.limits import (
    CircuitBreaker,
    LimitSpec,
    LocalLimiter,
    RedisLimiter,
    duration,
    make_limiter,
    rate_limit_error,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def lim(clock: ManualClock) -> LocalLimiter:
    return LocalLimiter(clock)


# limits hold exactly ------------------------------------------------------------------------
async def test_rpm_admits_exactly_the_limit_then_denies(lim: LocalLimiter) -> None:
    spec = LimitSpec(rpm=5)
    got = [await lim.reserve("acct", spec, 0) for _ in range(7)]
    assert [r.allowed for r in got] == [True] * 5 + [False] * 2
    assert [r.requests_quota.remaining for r in got if r.requests_quota] == [4, 3, 2, 1, 0, 0, 0]
    denied = got[5]
    assert denied.reason == "requests" and denied.retry_after_s == pytest.approx(12.0)
    assert denied.tokens_quota is None and denied.source == "local"


async def test_tpm_admits_exactly_the_limit(lim: LocalLimiter) -> None:
    spec = LimitSpec(rpm=100, tpm=1000)
    assert [(await lim.reserve("a", spec, n)).allowed for n in (400, 400, 200)] == [True] * 3
    r = await lim.reserve("a", spec, 1)
    assert not r.allowed and r.reason == "tokens"
    assert r.retry_after_s == pytest.approx(0.06)  # one token drains in 60/1000 s
    assert r.tokens_quota is not None and r.tokens_quota.remaining == 0
    assert r.requests_quota is not None and r.requests_quota.remaining == 97  # denial took nothing


async def test_subjects_are_independent(lim: LocalLimiter) -> None:
    spec = LimitSpec(rpm=1)
    assert (await lim.reserve("a", spec, 0)).allowed
    assert (await lim.reserve("b", spec, 0)).allowed
    assert not (await lim.reserve("a", spec, 0)).allowed


async def test_budget_replenishes_continuously_and_resets_fully(
    lim: LocalLimiter, clock: ManualClock
) -> None:
    spec = LimitSpec(rpm=7, tpm=700)  # 60/7 s per request: not a round number
    for _ in range(7):
        assert (await lim.reserve("a", spec, 100)).allowed
    assert not (await lim.reserve("a", spec, 100)).allowed
    for _ in range(20):  # every 60/7 s exactly one more request fits, never two
        clock.advance(60 / 7)
        assert (await lim.reserve("a", spec, 100)).allowed
        assert not (await lim.reserve("a", spec, 0)).allowed
    clock.advance(60.0)
    got = [(await lim.reserve("a", spec, 100)).allowed for _ in range(8)]
    assert got == [True] * 7 + [False]


async def test_never_more_than_limit_plus_refill_in_any_window(lim: LocalLimiter, clock: ManualClock) -> None:
    rng = random.Random(7)
    spec, admitted = LimitSpec(rpm=30), []
    for _ in range(5000):
        clock.advance(rng.expovariate(2.0))  # 2 requests/s offered vs 0.5/s allowed
        if (await lim.reserve("a", spec, 0)).allowed:
            admitted.append(clock.monotonic())
    j = 0
    for i, t in enumerate(admitted):  # any 60 s window: at most limit + what drained in it (+1 edge)
        while admitted[j] < t - 60.0:
            j += 1
        assert i - j + 1 <= 30 + 30 + 1
    ceiling = 30 + clock.monotonic() / 2  # the burst + 0.5/s: reached, never passed (always saturated)
    assert ceiling - 2 <= len(admitted) <= ceiling


async def test_request_larger_than_tpm_never_fits(lim: LocalLimiter) -> None:
    r = await lim.reserve("a", LimitSpec(tpm=1000), 1001)
    assert not r.allowed and r.reason == "too_large" and r.retry_after_s is None
    h = lim.headers(r)
    assert "retry-after" not in h and h["x-should-retry"] == "false"
    err = rate_limit_error(r)
    assert err.status == 429 and "Request too large" in err.message and "1001" in err.message


async def test_unlimited_spec_always_allows(lim: LocalLimiter) -> None:
    r = await lim.reserve("a", LimitSpec(), 10**9)
    assert r.allowed and r.source == "unlimited" and lim.headers(r) == {} and len(lim) == 0


# settle and cancel --------------------------------------------------------------------------
async def test_settle_refunds_over_reservation(lim: LocalLimiter) -> None:
    spec = LimitSpec(tpm=1000)
    r = await lim.reserve("a", spec, 800)
    assert await lim.settle(r, 150) == -650
    nxt = await lim.reserve("a", spec, 850)
    assert nxt.allowed and nxt.tokens_quota is not None and nxt.tokens_quota.remaining == 0


async def test_settle_charges_under_reservation_into_debt(lim: LocalLimiter, clock: ManualClock) -> None:
    spec = LimitSpec(tpm=1000)
    r = await lim.reserve("a", spec, 100)
    assert await lim.settle(r, 1500) == 1400  # the stream produced it: charged, never refused
    d = await lim.reserve("a", spec, 0)
    assert not d.allowed and d.reason == "tokens"
    assert d.retry_after_s == pytest.approx(30.0)  # 500 over the limit at 1000/60 per s
    clock.advance(30.0)
    assert (await lim.reserve("a", spec, 0)).allowed


async def test_settle_acts_once_and_not_on_denials(lim: LocalLimiter) -> None:
    spec = LimitSpec(rpm=1, tpm=1000)
    r = await lim.reserve("a", spec, 500)
    assert await lim.settle(r, 100) == -400
    assert await lim.settle(r, 0) == 0  # second settle: no-op
    await lim.cancel(r)  # after settle: no-op
    denied = await lim.reserve("a", spec, 10)
    assert not denied.allowed and await lim.settle(denied, 999) == 0
    with pytest.raises(ValueError):
        await lim.settle(r, -1)


async def test_cancel_gives_back_request_and_tokens(lim: LocalLimiter) -> None:
    spec = LimitSpec(rpm=1, tpm=100)
    r = await lim.reserve("a", spec, 100)
    assert not (await lim.reserve("a", spec, 0)).allowed
    await lim.cancel(r)
    again = await lim.reserve("a", spec, 100)
    assert again.allowed and len(lim) == 1


# headers and errors -------------------------------------------------------------------------
async def test_headers_on_allow_and_deny(lim: LocalLimiter, clock: ManualClock) -> None:
    spec = LimitSpec(rpm=60, tpm=1000)
    r = await lim.reserve("cluster-77", spec, 250)
    assert lim.headers(r) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "750",
        "x-ratelimit-reset-tokens": "15s",
    }
    await lim.reserve("cluster-77", spec, 750)
    clock.advance(0.5)
    d = await lim.reserve("cluster-77", spec, 100)  # 1000 used, 8.33 drained: needs 91.67 more -> 5.5 s
    h = lim.headers(d)
    assert h["retry-after"] == "6" and h["retry-after-ms"] == "5500"
    assert h["x-ratelimit-remaining-tokens"] == "8" and h["x-ratelimit-reset-tokens"] == "59.5s"
    err = rate_limit_error(d)
    assert isinstance(err, RateLimitError) and err.status == 429 and err.headers == h
    assert err.envelope()["error"]["code"] == "rate_limit_exceeded"
    assert "tokens per min (TPM)" in err.message and "5.5s" in err.message and "cluster-77" not in err.message
    with pytest.raises(ValueError):
        rate_limit_error(r)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0004, "1ms"), (0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (8.64, "8.64s"),
     (59.9999, "1m0s"), (360, "6m0s"), (61.25, "1m1.25s"), (3725, "1h2m5s")],
)  # fmt: skip
def test_duration_format(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_limit_spec_validation() -> None:
    for bad in (
        {"rpm": 0},
        {"tpm": -5},
        {"rpm": 1.5},
        {"rpm": True},
        {"period_s": 0},
        {"period_s": float("inf")},
    ):
        with pytest.raises(ConfigError):
            LimitSpec(**bad)


async def test_bad_arguments_are_caller_bugs(lim: LocalLimiter) -> None:
    with pytest.raises(ValueError):
        await lim.reserve("a", LimitSpec(rpm=1), -1)
    with pytest.raises(ValueError):
        await lim.reserve("", LimitSpec(rpm=1), 0)


# concurrency --------------------------------------------------------------------------------
async def test_many_tasks_never_over_admit(lim: LocalLimiter) -> None:
    spec = LimitSpec(rpm=100, tpm=10_000)

    async def one(i: int) -> bool:
        await asyncio.sleep(0)
        r = await lim.reserve("hot", spec, 1 + i % 150)
        await asyncio.sleep(0)
        return r.allowed

    results = await asyncio.gather(*(one(i) for i in range(2000)))
    admitted_tokens = sum(1 + i % 150 for i, ok in enumerate(results) if ok)
    assert 0 < sum(results) <= 100 and admitted_tokens <= 10_000


def test_many_threads_never_over_admit(clock: ManualClock) -> None:
    lim = LocalLimiter(clock)
    spec, allowed, barrier = LimitSpec(rpm=500), [0] * 8, threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        allowed[k] = sum(lim.reserve_sync("hot", spec, 0).allowed for _ in range(1000))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 500


# memory -------------------------------------------------------------------------------------
async def test_drained_subjects_are_evicted(lim: LocalLimiter, clock: ManualClock) -> None:
    spec = LimitSpec(rpm=10, tpm=1000)
    for i in range(1000):
        await lim.reserve(f"s{i}", spec, 10)
    assert len(lim) == 1000
    clock.advance(7.0)  # 1 request drains in 6 s, 10 tokens in 0.6 s: all idle now
    for i in range(10):
        await lim.reserve(f"new{i}", spec, 10)
    assert len(lim) == 1000 + 10 - 20  # each operation drops up to two idle ones
    assert lim.sweep() == 980 and len(lim) == 10
    assert lim.stats()["evicted_active"] == 0


async def test_max_subjects_bounds_memory(clock: ManualClock) -> None:
    lim = LocalLimiter(clock, max_subjects=100)
    spec = LimitSpec(rpm=1)
    for i in range(1000):
        await lim.reserve(f"s{i}", spec, 0)
    assert len(lim) == 100 and lim.stats()["evicted_active"] == 900
    assert not (await lim.reserve("s999", spec, 0)).allowed  # recent subjects are kept


async def test_refund_to_zero_forgets_the_subject(lim: LocalLimiter) -> None:
    r = await lim.reserve("a", LimitSpec(tpm=100), 50)
    await lim.cancel(r)
    assert len(lim) == 0


# local share (RedisLimiter's outage fallback) -----------------------------------------------
async def test_share_enforces_a_fraction_and_reports_the_global_view(clock: ManualClock) -> None:
    lim = LocalLimiter(clock, share=0.25)
    spec = LimitSpec(rpm=8, tpm=1000)
    got = [await lim.reserve("a", spec, 10) for _ in range(3)]
    assert [r.allowed for r in got] == [True, True, False]
    assert got[0].requests_quota is not None and got[0].requests_quota.limit == 8
    assert got[0].requests_quota.remaining == 4  # (2 - 1) local units, scaled back up


async def test_share_still_admits_a_big_request_when_empty(clock: ManualClock) -> None:
    lim = LocalLimiter(clock, share=0.25)
    spec = LimitSpec(tpm=1000)  # local capacity 250
    assert (await lim.reserve("a", spec, 900)).allowed  # within the global limit, bucket empty
    d = await lim.reserve("a", spec, 1)
    assert not d.allowed and d.retry_after_s == pytest.approx((900 - 249) * 60 / 250)
    assert not (await lim.reserve("a", spec, 1001)).allowed  # over the global limit: never


# circuit breaker ----------------------------------------------------------------------------
def test_breaker_opens_after_threshold_and_probes_once(clock: ManualClock) -> None:
    b = CircuitBreaker(clock, failure_threshold=3, min_outage_s=0.0, cooldown_s=5.0)
    for _ in range(2):
        assert b.acquire() == (True, False)
        b.failure(False, "boom")
    b.acquire()
    b.success(False)  # a success resets the run of failures
    for _ in range(3):
        b.acquire()
        b.failure(False, "boom")
    assert b.state == "open" and b.acquire() == (False, False) and b.opens == 1
    clock.advance(5.0)
    assert b.state == "half_open"
    assert b.acquire() == (True, True)
    assert b.acquire() == (False, False)  # one probe at a time
    b.failure(True, "still down")
    assert b.state == "open" and b.opens == 2
    clock.advance(5.0)
    assert b.acquire() == (True, True)
    b.release(True)  # cancelled probe frees the slot
    assert b.acquire() == (True, True)
    b.success(True)
    assert b.state == "closed" and b.acquire() == (True, False)


def test_breaker_needs_a_sustained_run_of_failures(clock: ManualClock) -> None:
    b = CircuitBreaker(clock, failure_threshold=3, min_outage_s=0.2, cooldown_s=5.0)
    for _ in range(50):  # one stall: every call in flight comes back slow at about the same time
        b.failure(False, "slow")
        clock.advance(0.001)
    assert b.state == "closed"
    b.success(False)  # the next call is fine: the run is over
    clock.advance(0.5)
    b.failure(False, "slow")
    assert b.state == "closed"
    for _ in range(10):  # a real outage: failures keep coming
        clock.advance(0.05)
        b.failure(False, "timeout")
    assert b.state == "open" and b.opens == 1


def test_breaker_ignores_late_results_of_calls_made_before_opening(clock: ManualClock) -> None:
    b = CircuitBreaker(clock, failure_threshold=1, min_outage_s=0.0, cooldown_s=1.0)
    b.failure(False, "boom")
    b.success(False)  # an older in-flight call finishing late must not close it
    assert b.state == "open"


# RedisLimiter with a fake client: fallback, timeouts, breaker --------------------------------
class _FakeScript:
    def __init__(self, mode: dict[str, str]) -> None:
        self.mode = mode
        self.calls = 0

    async def __call__(self, keys: list[str], args: list[Any]) -> list[Any]:
        self.calls += 1
        if self.mode["m"] == "hang":
            await asyncio.sleep(3600)
        if self.mode["m"] == "slow":
            await asyncio.sleep(0.03)
            return [1, "1", "0"]
        raise ConnectionError("connection refused")


class _FakeClient:
    def __init__(self) -> None:
        self.mode = {"m": "error"}
        self.script = _FakeScript(self.mode)

    def register_script(self, text: str) -> _FakeScript:
        return self.script

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("mode", ["error", "hang", "slow"])
async def test_redis_limiter_falls_back_and_opens_without_hanging(clock: ManualClock, mode: str) -> None:
    fake = _FakeClient()
    fake.mode["m"] = mode
    lim = RedisLimiter(
        fake,  # type: ignore[arg-type]
        expected_replicas=2, timeout_s=0.05, latency_budget_s=0.02, failure_threshold=3, min_outage_s=0.0,
        cooldown_s=10.0, clock=clock, owns_client=True,
    )  # fmt: skip
    spec = LimitSpec(rpm=10)
    got = []
    for _ in range(8):
        t = time.perf_counter()
        got.append(await lim.reserve("a", spec, 0))
        assert time.perf_counter() - t < 0.5
    assert fake.script.calls == 3 and lim.state == "open"  # then no more Redis calls
    expected_sources = ["redis" if mode == "slow" else "fallback"] * 3 + ["fallback"] * 5
    assert [r.source for r in got] == expected_sources
    fallback_allowed = sum(r.allowed for r in got if r.source == "fallback")
    assert fallback_allowed == 5  # local share: 10 / 2 replicas
    stats = lim.stats()
    assert stats["state"] == "open" and stats["breaker_opens"] == 1
    await lim.aclose()


async def test_redis_limiter_settles_fallback_reservations_locally(clock: ManualClock) -> None:
    lim = RedisLimiter(_FakeClient(), clock=clock, failure_threshold=1, min_outage_s=0)  # type: ignore[arg-type]
    spec = LimitSpec(tpm=1000)
    r = await lim.reserve("a", spec, 500)  # local share 1000 (1 replica)
    assert r.source == "fallback"
    assert await lim.settle(r, 100) == -400
    assert (await lim.reserve("a", spec, 900)).allowed


def test_make_limiter_picks_by_url() -> None:
    assert isinstance(make_limiter(None), LocalLimiter)
    assert isinstance(make_limiter("redis://127.0.0.1:1/0", expected_replicas=3), RedisLimiter)
