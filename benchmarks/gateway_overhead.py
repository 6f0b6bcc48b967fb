"""Gateway overhead: the same fake upstream (fixed delay, loopback) called directly and through the
gateway, at equal offered load. Reports added latency p50/p99 (non-streaming), added time to first
token (streaming), and sustained requests/s with the gateway pinned to ONE core.

    .venv/bin/python benchmarks/gateway_overhead.py [--rate 200] [--duration 20] [--delay-ms 20]

Layout on a 2-core machine: the gateway process is pinned to core 1; the fake upstream and this load
generator share core 0. Writes benchmarks/results/gateway_overhead.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._util import percentile, print_table, write_results

VENV_BIN = Path(sys.executable).parent
BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say something short about benchmarks."}],
    "max_tokens": 16,
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pinned(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None and os.cpu_count() and os.cpu_count() > 1 else []


def _wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up")


async def _one(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str], stream: bool
) -> tuple[float, float]:
    """(time to first SSE data line or to the whole JSON body, time to the last byte)."""
    t0 = time.perf_counter()
    body = {**BODY, "stream": True} if stream else BODY
    async with client.post(url, json=body, headers=headers) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {(await r.read())[:200]!r}")
        if not stream:
            await r.read()
            t = time.perf_counter() - t0
            return t, t
        ttft = None
        async for line in r.content:
            if ttft is None and line.startswith(b"data: {"):
                ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return (ttft if ttft is not None else total), total


def _session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections), timeout=aiohttp.ClientTimeout(total=60)
    )


async def open_loop(
    url: str, headers: dict[str, str], rate: float, duration: float, stream: bool
) -> dict[str, Any]:
    """Send at a fixed rate regardless of completions (no coordinated omission)."""
    n = int(rate * duration)
    lat: list[float] = []
    first: list[float] = []
    errors = 0
    async with _session(512) as client:
        for _ in range(20):  # warm up connections
            await _one(client, url, headers, stream)
        start = time.perf_counter()

        async def fire(i: int) -> None:
            nonlocal errors
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                f, t = await _one(client, url, headers, stream)
                first.append(f)
                lat.append(t)
            except (aiohttp.ClientError, RuntimeError, TimeoutError):
                errors += 1

        await asyncio.gather(*(fire(i) for i in range(n)))
        elapsed = time.perf_counter() - start
    ms = 1000.0
    return {
        "requests": n,
        "errors": errors,
        "achieved_rps": len(lat) / elapsed,
        "p50_ms": percentile(lat, 50) * ms,
        "p99_ms": percentile(lat, 99) * ms,
        "ttft_p50_ms": percentile(first, 50) * ms,
        "ttft_p99_ms": percentile(first, 99) * ms,
    }


async def closed_loop(url: str, headers: dict[str, str], concurrency: int, duration: float) -> float:
    done = 0
    async with _session(concurrency) as client:
        stop = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await _one(client, url, headers, False)
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--concurrency", type=int, default=64, help="closed-loop throughput test")
    ap.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    tmp = Path(tempfile.mkdtemp(prefix="adbench-"))
    db = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    up_port, gw_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "ANTIDISTILL_EVENTS__SPILL_DIR": str(tmp / "spill"),
        "ANTIDISTILL_WATERMARK__MASTER_SECRET_FILE": str(tmp / "wm.secret"),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    *_pinned(0),
                    str(VENV_BIN / "python"),
                    "-m",
                    "antidistill.evaluation.fake_upstream",
                    "--port",
                    str(up_port),
                    "--delay-ms",
                    str(args.delay_ms),
                ],
                env=env,
            )
        )
        out = subprocess.run(
            [str(VENV_BIN / "antidistill"), "keys", "create", "bench", "--json", "--database-url", db],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        key = json.loads(out.stdout.strip().splitlines()[-1])["api_key"]
        procs.append(
            subprocess.Popen(
                [
                    *_pinned(1),
                    str(VENV_BIN / "antidistill"),
                    "serve",
                    "--backend",
                    "openai",
                    "--served-model",
                    "bench",
                    "--upstream-url",
                    f"http://127.0.0.1:{up_port}/v1",
                    "--port",
                    str(gw_port),
                    "--database-url",
                    db,
                    "--log-level",
                    "warning",
                ],
                env=env,
            )
        )
        _wait_http(f"http://127.0.0.1:{up_port}/v1/models")
        _wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        direct = (f"http://127.0.0.1:{up_port}/v1/chat/completions", {})
        via = (f"http://127.0.0.1:{gw_port}/v1/chat/completions", {"Authorization": f"Bearer {key}"})

        rows: list[dict[str, Any]] = []
        results: dict[str, Any] = {
            "rate": args.rate,
            "duration_s": args.duration,
            "delay_ms": args.delay_ms,
            "database": db.split("://")[0],
        }
        for stream in (False, True):
            mode = "stream" if stream else "json"
            for name, (url, headers) in (("direct", direct), ("gateway", via)):
                r = asyncio.run(open_loop(url, headers, args.rate, args.duration, stream))
                results[f"{mode}_{name}"] = r
                rows.append({"mode": mode, "target": name, **r})
            d, g = results[f"{mode}_direct"], results[f"{mode}_gateway"]
            key_p50, key_p99 = ("ttft_p50_ms", "ttft_p99_ms") if stream else ("p50_ms", "p99_ms")
            results[f"{mode}_added_p50_ms"] = g[key_p50] - d[key_p50]
            results[f"{mode}_added_p99_ms"] = g[key_p99] - d[key_p99]
        results["gateway_rps_one_core"] = asyncio.run(closed_loop(via[0], via[1], args.concurrency, 10))
        results["direct_rps"] = asyncio.run(closed_loop(direct[0], {}, args.concurrency, 10))
        path = write_results("gateway_overhead", results)
        print_table(
            rows,
            ["mode", "target", "achieved_rps", "p50_ms", "p99_ms", "ttft_p50_ms", "ttft_p99_ms", "errors"],
        )
        print(
            f"added latency (json):   p50 {results['json_added_p50_ms']:.2f} ms   p99 "
            f"{results['json_added_p99_ms']:.2f} ms"
        )
        print(
            f"added TTFT (stream):    p50 {results['stream_added_p50_ms']:.2f} ms   p99 "
            f"{results['stream_added_p99_ms']:.2f} ms"
        )
        print(
            f"sustained: gateway on one core {results['gateway_rps_one_core']:.0f} req/s "
            f"(direct upstream {results['direct_rps']:.0f} req/s)"
        )
        print(f"wrote {path}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
