"""Replay throughput of the risk engine: how long scoring a recorded trace takes, as ``antidistill
replay`` does it (signals, features, account graph, prompt embeddings, looks, findings).

    .venv/bin/python benchmarks/risk_replay_speed.py --preset large --embedder minilm

Generates the trace in memory (``large`` is about 1M requests over 14 days, ~25k accounts),
calibrates on the bundled benign corpora (cached after the first run), then replays the trace once
and reports requests/s (wall and CPU), the share of time in prompt embeddings, peak RSS, and the
projected time for 1M requests. Writes ``benchmarks/results/risk_replay_<preset>_<embedder>.json``.
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import replace

from _util import machine, write_results
from antidistill.evaluation import replay as rp
from antidistill.evaluation.detection import default_calibration
from antidistill.evaluation.traffic import generate_trace, preset
from antidistill.risk.engine import RiskEngine


class _TimedEmbedder:
    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.texts = 0
        self.dim = inner.dim  # type: ignore[attr-defined]
        self.name = getattr(inner, "name", type(inner).__name__)

    def embed(self, texts):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = self.inner.embed(texts)  # type: ignore[attr-defined]
        self.seconds += time.perf_counter() - t
        self.texts += len(texts)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="large")
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--seed", type=int, default=303)
    ap.add_argument("--chunk", type=int, default=2000)
    args = ap.parse_args()

    t0 = time.perf_counter()
    trace = generate_trace(replace(preset(args.preset, args.seed), split="test"))
    gen_s = time.perf_counter() - t0
    cal = default_calibration(args.embedder, 1e-3, progress=True)
    inner = rp.make_embedder(args.embedder)
    emb = _TimedEmbedder(inner) if inner is not None else None
    engine = RiskEngine(cal, emb)  # type: ignore[arg-type]
    stats = rp.run(engine, trace, chunk=args.chunk, total=len(trace), progress=True)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    flagged = sum(1 for r in engine.accounts.values() if r.first_flag_ts is not None)
    res = {
        "benchmark": "risk_replay_speed",
        "machine": machine(),
        "preset": args.preset,
        "embedder": args.embedder,
        "requests": stats.requests,
        "accounts": len(engine.accounts),
        "clusters": len(engine.graph.clusters()),
        "flagged_accounts": flagged,
        "generate_s": round(gen_s, 1),
        "replay_wall_s": round(stats.seconds_wall, 1),
        "replay_cpu_s": round(stats.seconds_cpu, 1),
        "requests_per_s_wall": round(stats.requests / stats.seconds_wall, 1),
        "embedded_prompts": emb.texts if emb else 0,
        "embedding_s": round(emb.seconds, 1) if emb else 0.0,
        "projected_minutes_per_1m": round(1e6 / (stats.requests / stats.seconds_wall) / 60, 1),
        "peak_rss_mb": round(rss_mb),
    }
    path = write_results(f"risk_replay_{args.preset}_{args.embedder}", res)
    cols = ["requests", "accounts", "replay_wall_s", "requests_per_s_wall", "embedding_s"]
    cols += ["projected_minutes_per_1m", "peak_rss_mb"]
    print("  ".join(f"{c:>12.12}" for c in cols))
    print("  ".join(f"{res[c]!s:>12}" for c in cols))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
