"""Watermark speed: detection throughput (tokens/s on already-tokenized text, one core), attribution
over 1,000 keys, and the per-token cost of watermarked sampling at a 49,152-token vocabulary.

Run: .venv/bin/python benchmarks/watermark_detect_speed.py [--quick]
Writes benchmarks/results/watermark_detect_speed.json and prints a table. Times are CPU seconds of
this process (``time.process_time``; numpy runs these kernels on one thread), wall time alongside.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from antidistill.backends.base import SamplingParams
from antidistill.watermark import Detector, Keyring, WatermarkSampler
from antidistill.watermark.schemes.sampling import Workspace

OUT = Path(__file__).parent / "results" / "watermark_detect_speed.json"
VOCAB = 49_152


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Best-of-``repeat`` (cpu seconds, wall seconds) of one call."""
    fn()  # warm up
    best_cpu, best_wall = float("inf"), float("inf")
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        fn()
        best_cpu, best_wall = min(best_cpu, time.process_time() - c), min(best_wall, time.perf_counter() - w)
    return best_cpu, best_wall


def _corpus(n_docs: int, length: int, seed: int) -> list[np.ndarray]:
    ranks = np.arange(VOCAB)
    p = 1.0 / (ranks + 2.7) ** 1.1
    return list(np.random.default_rng(seed).choice(VOCAB, size=(n_docs, length), p=p / p.sum()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller corpora (CI smoke run)")
    args = ap.parse_args()
    scale = 10 if args.quick else 1
    ring = Keyring(b"benchmark-master-secret-00000000", "smollm2", VOCAB)
    rows: list[dict[str, Any]] = []
    docs = _corpus(1000 // scale, 1000, 1)
    n_tokens = sum(d.shape[0] for d in docs)
    for scheme in ("gumbel", "kgw"):
        key = ring.account_key("acct-1", scheme=scheme)
        for pool in (True, False):
            cpu, wall = _timed(partial(Detector().detect, docs, [key], pool=pool), 3)
            rows.append(
                {
                    "task": f"detect {'pooled' if pool else 'per-document'}",
                    "scheme": scheme,
                    "tokens": n_tokens,
                    "cpu_s": cpu,
                    "wall_s": wall,
                    "tokens_per_s": n_tokens / cpu,
                }
            )

        keys = [ring.account_key(f"acct-{i:04d}", scheme=scheme) for i in range(1000)]
        texts = _corpus(10, 1000 // scale, 2)
        t_tokens = sum(d.shape[0] for d in texts)
        cpu, wall = _timed(partial(Detector().attribute, texts, keys), 2)
        rows.append(
            {
                "task": "attribute 1,000 keys",
                "scheme": scheme,
                "tokens": t_tokens,
                "cpu_s": cpu,
                "wall_s": wall,
                "tokens_per_s": t_tokens / cpu,
                "key_tokens_per_s": 1000 * t_tokens / cpu,
            }
        )

        rng = np.random.default_rng(3)
        logits = (5.0 * rng.standard_normal(VOCAB)).astype(np.float32)  # ~3.5 nats over 49k tokens
        for top_p in (1.0, 0.9):
            sampler = WatermarkSampler.for_key(key, rng=np.random.default_rng(4))
            ctx = list(rng.integers(0, VOCAB, 16))
            params = SamplingParams(max_tokens=10_000, top_p=top_p)
            steps = 300 // scale

            def run(
                s: WatermarkSampler = sampler,
                c: list[int] = ctx,
                pr: SamplingParams = params,
                n: int = steps,
                lg: np.ndarray = logits,
            ) -> None:
                for _ in range(n):
                    c.append(s.sample(c, lg, pr))

            cpu, wall = _timed(run, 2)
            rows.append(
                {
                    "task": f"sample step V=49152 top_p={top_p}",
                    "scheme": scheme,
                    "tokens": steps,
                    "cpu_s": cpu,
                    "wall_s": wall,
                    "tokens_per_s": steps / cpu,
                    "us_per_token": 1e6 * cpu / steps,
                }
            )
        ws = key.build_scheme().workspace(key, VOCAB)

        def prf_100(w: Workspace = ws) -> None:
            for _ in range(100):
                w.prf_values([1, 2, 3, 4])

        cpu, wall = _timed(prf_100, 3)
        rows.append(
            {
                "task": "PRF over vocab (one window)",
                "scheme": scheme,
                "tokens": VOCAB,
                "cpu_s": cpu / 100,
                "wall_s": wall / 100,
                "us_per_window": 1e6 * cpu / 100,
            }
        )

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "quick": args.quick,
                "numpy": np.__version__,
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"{'task':<36} {'scheme':<7} {'tokens':>9} {'cpu s':>9} {'tokens/s':>12}  extra")
    for r in rows:
        extra = "; ".join(
            f"{k}={v:,.1f}"
            for k, v in r.items()
            if k in ("us_per_token", "us_per_window", "key_tokens_per_s")
        )
        print(
            f"{r['task']:<36} {r['scheme']:<7} {r['tokens']:>9,} {r['cpu_s']:>9.4f} "
            f"{r.get('tokens_per_s', 0):>12,.0f}  {extra}"
        )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
