"""The benchmarks' HTTP load generator and process helpers (one copy, used by every gateway benchmark).

``open_loop`` sends at a fixed rate whatever the completions (no coordinated omission) and counts
every outcome; ``closed_loop`` runs back-to-back workers. Both go through ``Targets`` (one URL, the
API keys to use in turn, the body).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from benchmarks._util import percentile

BODY: dict[str, Any] = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say something short about benchmarks."}],
    "max_tokens": 16,
}
MS = 1000.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: int | None) -> list[str]:
    """``taskset`` prefix pinning a process to one core (nothing on a 1-core machine)."""
    return ["taskset", "-c", str(core)] if core is not None and (os.cpu_count() or 1) > 1 else []


def start_fake_upstream(
    port: int,
    env: dict[str, str],
    *,
    delay_ms: float | None = None,
    core: int | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``antidistill.evaluation.fake_upstream`` on ``port`` (optionally pinned to ``core``)."""
    cmd = [*pinned(core), sys.executable, "-m", "antidistill.evaluation.fake_upstream", "--port", str(port)]
    if delay_ms is not None:
        cmd += ["--delay-ms", str(delay_ms)]
    if log is None:
        return subprocess.Popen(cmd, env=env)
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """Terminate every process that still runs; kill what does not stop within ``timeout``."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up")


class Targets:
    """Where requests go: one URL, and the Authorization headers to use in turn."""

    def __init__(self, url: str, keys: list[str] | None, body: dict[str, Any] | None = None) -> None:
        self.url = url
        self.body = BODY if body is None else body
        self.headers = [{"Authorization": f"Bearer {k}"} for k in keys] if keys else [{}]

    def h(self, i: int) -> dict[str, str]:
        return self.headers[i % len(self.headers)]


async def one(
    client: aiohttp.ClientSession, t: Targets, i: int, stream: bool
) -> tuple[int, float, float, dict[str, str]]:
    """(status, time to first SSE data line or to the whole body, time to the last byte, headers)."""
    t0 = time.perf_counter()
    body = {**t.body, "stream": True} if stream else t.body
    async with client.post(t.url, json=body, headers=t.h(i)) as r:
        first = None
        if stream and r.status == 200:
            async for line in r.content:
                if first is None and line.startswith(b"data: {"):
                    first = time.perf_counter() - t0
        else:
            await r.read()
        total = time.perf_counter() - t0
        return r.status, (first if first is not None else total), total, dict(r.headers)


def session(connections: int, timeout_s: float = 60.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )


async def open_loop(
    t: Targets,
    rate: float,
    duration: float,
    stream: bool,
    *,
    timeout_s: float = 60.0,
    warmup: int = 50,
    warmup_s: float = 2.0,
) -> dict[str, Any]:
    """Send at a fixed rate regardless of completions; count every outcome.

    ``warmup`` requests one after the other, then ``warmup_s`` seconds at the full rate that are not
    counted (they open the connections the rate needs, and absorb the generator's own start-up:
    without it the first burst of new connections dominated the p99 of a 20 s run), then
    ``duration`` seconds measured. ``sent`` is every request sent, warm-up included."""
    n_warm = int(rate * warmup_s)
    n = int(rate * duration)
    lat: list[float] = []
    first: list[float] = []
    outcomes: Counter[str] = Counter()
    when: list[tuple[float, float]] = []  # (latency, when it was sent, s after the start)
    async with session(4096, timeout_s) as client:
        for i in range(warmup):
            await one(client, t, i, stream)
        start = time.perf_counter()
        late = 0

        async def fire(i: int) -> None:
            nonlocal late
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05 and i >= n_warm:
                late += 1  # the generator itself fell behind the schedule
            if i < n_warm:
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    await one(client, t, i, stream)
                return
            try:
                status, f, total, headers = await one(client, t, i, stream)
            except TimeoutError:
                outcomes["timeout"] += 1
                return
            except aiohttp.ClientError as e:
                outcomes[f"error:{type(e).__name__}"] += 1
                return
            if status == 200:
                first.append(f)
                lat.append(total)
                when.append((total, time.perf_counter() - total - start - warmup_s))
                outcomes["200"] += 1
            else:
                retry = "retry-after" in {k.lower() for k in headers}
                outcomes[f"{status}{'+retry-after' if retry else ''}"] += 1

        await asyncio.gather(*(fire(i) for i in range(n_warm + n)))
        elapsed = time.perf_counter() - start - warmup_s
    return {
        "offered_rps": rate,
        "requests": n,
        "sent": warmup + n_warm + n,
        "warmup_s": warmup_s,
        "late_sends": late,
        "achieved_rps": len(lat) / elapsed,
        "p50_ms": percentile(lat, 50) * MS,
        "p99_ms": percentile(lat, 99) * MS,
        "max_ms": max(lat) * MS if lat else float("nan"),
        "ttft_p50_ms": percentile(first, 50) * MS,
        "ttft_p99_ms": percentile(first, 99) * MS,
        "outcomes": dict(sorted(outcomes.items())),
        "errors": n - outcomes["200"],
        # where the tail is: the 10 slowest answers, (seconds after the start, ms)
        "slowest": [(round(t, 2), round(x * MS, 1)) for x, t in sorted(when, reverse=True)[:10]],
    }


async def closed_loop(
    t: Targets, concurrency: int, *, duration: float = 0.0, total: int = 0
) -> dict[str, Any]:
    """``concurrency`` workers back to back, for ``duration`` seconds or ``total`` requests."""
    done = 0
    bad: Counter[int] = Counter()
    async with session(concurrency) as client:
        stop = time.perf_counter() + duration if duration else float("inf")
        counter = iter(range(total if total else 1 << 62))

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                i = next(counter, None)
                if i is None:
                    return
                status, *_ = await one(client, t, i, False)
                done += 1
                if status != 200:
                    bad[status] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    ok = done - sum(bad.values())
    return {"requests": done, "seconds": elapsed, "rps": ok / elapsed, "non_200": dict(bad)}
