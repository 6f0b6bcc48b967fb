"""Rate-limiter speed: latency (p50/p99) and throughput of one reserve + settle pair, LocalLimiter vs
RedisLimiter (real Redis), sequential and with many concurrent tasks on one event loop.

    .venv/bin/python benchmarks/limits_speed.py [--quick] [--redis-url redis://127.0.0.1:6379/0]

Each op is ``reserve(subject, rpm/tpm, 500 tokens)`` then ``settle(..., 120..620 tokens)`` over 1,000
subjects, limits high enough that nothing is denied (the cost of admitting is what matters).
Latency of a concurrent op includes waiting for the event loop and a pooled connection.
``redis`` rows use the production defaults (50 ms timeout, 20 ms latency budget). ``fallback`` counts
the ops the circuit breaker sent to the local fallback; 0 means every op was decided in Redis.
Rows with ``concurrency`` "N/s" are open loop: an op starts every 1/N s, like arriving requests,
with production defaults. They show whether the breaker stays closed at a given request rate.
``redis-raw`` rows set timeout and budget to 5 s, so every op goes to Redis: that is the raw capacity of one
event loop. ``parser`` says whether redis-py found ``hiredis`` (C reply parser) or used its own.
Writes benchmarks/results/<--name>.json (default limits_speed) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from redis.utils import HIREDIS_AVAILABLE

from antidistill.limits import Limiter, LimitSpec, LocalLimiter, RedisLimiter
from benchmarks._util import percentile, print_table, write_results

SPEC = LimitSpec(rpm=10**7, tpm=10**10)
SUBJECTS = [f"acct-{i:04d}" for i in range(1000)]


async def _op(lim: Limiter, rng: random.Random) -> float:
    t = time.perf_counter()
    r = await lim.reserve(rng.choice(SUBJECTS), SPEC, 500)
    await lim.settle(r, 120 + rng.randrange(500))
    return time.perf_counter() - t


async def _run(lim: Limiter, n: int, concurrency: int) -> dict[str, Any]:
    rng = random.Random(1)
    for _ in range(min(200, n)):  # warm up: connections, scripts loaded
        await _op(lim, rng)
    lat: list[float] = []

    async def worker(k: int) -> None:
        for _ in range(k):
            lat.append(await _op(lim, rng))

    per, extra = divmod(n, concurrency)
    start = time.perf_counter()
    await asyncio.gather(*(worker(per + (i < extra)) for i in range(concurrency)))
    wall = time.perf_counter() - start
    return {
        "ops": n,
        "concurrency": concurrency,
        "p50_us": percentile(lat, 50) * 1e6,
        "p99_us": percentile(lat, 99) * 1e6,
        "ops_per_s": n / wall,
    }


async def _run_rate(lim: Limiter, rate: float, seconds: float) -> dict[str, Any]:
    """Open loop: one op started every 1/rate s (like arriving requests), however long ops take."""
    rng = random.Random(2)
    lat: list[float] = []

    async def one() -> None:
        lat.append(await _op(lim, rng))

    n = int(rate * seconds)
    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return {
        "ops": n,
        "concurrency": f"{rate:.0f}/s",
        "p50_us": percentile(lat, 50) * 1e6,
        "p99_us": percentile(lat, 99) * 1e6,
        "ops_per_s": n / (time.perf_counter() - start),
    }


def _redis_ok(url: str) -> str | None:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as r:
            r.ping()
        return None
    except Exception as e:
        return f"{type(e).__name__}: {e}"


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    scale = 10 if args.quick else 1
    rows: list[dict[str, Any]] = []
    for conc in (1, 64):
        local = LocalLimiter()
        rows.append({"limiter": "local", **await _run(local, 200_000 // scale, conc), "fallback": 0})
        await local.aclose()
    prefix = f"antidistill:bench:{uuid.uuid4().hex}"
    try:
        plan: list[tuple[str, int, dict[str, Any]]] = [("redis", c, {}) for c in (1, 16, 64)]
        plan += [("redis-raw", c, {"timeout_s": 5.0, "latency_budget_s": 5.0}) for c in (16, 64, 256)]
        for name, conc, options in plan:
            lim = RedisLimiter.from_url(args.redis_url, prefix=prefix, **options)
            row = await _run(lim, 20_000 // scale if conc == 1 else 50_000 // scale, conc)
            rows.append({"limiter": name, **row, "fallback": lim.stats()["fallback_decisions"]})
            await lim.aclose()
        for rate in (200.0, 1000.0, 2000.0):  # production defaults at request rates a replica may see
            lim = RedisLimiter.from_url(args.redis_url, prefix=prefix)
            row = await _run_rate(lim, rate, 10.0 / scale)
            rows.append({"limiter": "redis", **row, "fallback": lim.stats()["fallback_decisions"]})
            await lim.aclose()
    finally:
        with redis.Redis.from_url(args.redis_url) as r:
            keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                r.delete(*keys)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10x fewer ops (smoke run)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--name", default="limits_speed", help="results file name (without .json)")
    args = ap.parse_args()
    problem = _redis_ok(args.redis_url)
    if problem is not None:
        sys.exit(f"Redis not reachable at {args.redis_url}: start redis on 127.0.0.1:6379 ({problem})")
    with redis.Redis.from_url(args.redis_url) as r:
        server = str(r.info("server")["redis_version"])
    load_before = os.getloadavg()[0]
    rows = asyncio.run(main_async(args))
    print_table(rows, ["limiter", "concurrency", "ops", "p50_us", "p99_us", "ops_per_s", "fallback"])
    path = write_results(
        args.name,
        {
            "parser": "hiredis" if HIREDIS_AVAILABLE else "python",
            "op": "reserve + settle (one subject of 1,000; nothing denied)",
            "redis_server": server,
            "redis_url": args.redis_url,
            "quick": args.quick,
            "load_avg_1m": {"before": load_before, "after": os.getloadavg()[0]},
            "rows": rows,
        },
    )
    print(f"parser: {'hiredis' if HIREDIS_AVAILABLE else 'python'}; wrote {path}")


if __name__ == "__main__":
    main()
