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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._load import Targets, closed_loop, open_loop, start_fake_upstream, stop_all
from benchmarks._load import free_port as _free_port
from benchmarks._load import pinned as _pinned
from benchmarks._load import wait_http as _wait_http
from benchmarks._util import print_table, write_results

VENV_BIN = Path(sys.executable).parent


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
        procs.append(start_fake_upstream(up_port, env, delay_ms=args.delay_ms, core=0))
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
        direct = Targets(f"http://127.0.0.1:{up_port}/v1/chat/completions", None)
        via = Targets(f"http://127.0.0.1:{gw_port}/v1/chat/completions", [key])

        rows: list[dict[str, Any]] = []
        results: dict[str, Any] = {
            "rate": args.rate,
            "duration_s": args.duration,
            "delay_ms": args.delay_ms,
            "database": db.split("://")[0],
        }
        for stream in (False, True):
            mode = "stream" if stream else "json"
            for name, target in (("direct", direct), ("gateway", via)):
                r = asyncio.run(open_loop(target, args.rate, args.duration, stream, warmup=20))
                results[f"{mode}_{name}"] = r
                rows.append({"mode": mode, "target": name, **r})
            d, g = results[f"{mode}_direct"], results[f"{mode}_gateway"]
            key_p50, key_p99 = ("ttft_p50_ms", "ttft_p99_ms") if stream else ("p50_ms", "p99_ms")
            results[f"{mode}_added_p50_ms"] = g[key_p50] - d[key_p50]
            results[f"{mode}_added_p99_ms"] = g[key_p99] - d[key_p99]
        results["gateway_rps_one_core"] = asyncio.run(closed_loop(via, args.concurrency, duration=10))["rps"]
        results["direct_rps"] = asyncio.run(closed_loop(direct, args.concurrency, duration=10))["rps"]
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
        stop_all(procs)


if __name__ == "__main__":
    main()
