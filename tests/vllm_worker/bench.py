"""Throughput of vLLM (CPU) with and without antidistill's watermark logits processor.

Runs in the vLLM venv (``scripts/setup_vllm_cpu.sh``):

    .venv-vllm/bin/python tests/vllm_worker/bench.py MODEL_DIR benchmarks/results/vllm_watermark.json

Two engines, each in its own child process (one vLLM engine per process): ``baseline`` (no custom
processor) and ``processor`` (ours loaded; requests unmarked, KGW-marked and Gumbel-marked). Each
cell is ``batch`` requests x ``max_tokens`` generated tokens (``ignore_eos``), temperature 1, timed
end to end (prefill included) after one warm-up; ``tok_s`` = generated tokens / wall seconds, the
median of ``repeats`` runs (all runs are kept). The 2 CPU cores are shared with other work: compare
cells of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

BATCHES = (1, 8, 32)
PROMPT = "Write a detailed essay about the history of bicycles and how they changed cities."


def _engine(model: str, engine: str, max_tokens: int, repeats: int, eager: bool) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    from antidistill.watermark.adapters.vllm import EXTRA_ARGS_KEY, PROCESSOR_FQCN, watermark_payload
    from antidistill.watermark.keys import derive_key

    t0 = time.perf_counter()
    llm = LLM(
        model=model,
        dtype="float32",
        max_model_len=1024,
        seed=0,
        enforce_eager=eager,
        logits_processors=[PROCESSOR_FQCN] if engine == "processor" else None,
    )
    start_s = time.perf_counter() - t0
    master = b"benchmark-master-secret-00000000"
    payloads: dict[str, str | None] = {"none": None}
    if engine == "processor":
        for scheme in ("kgw", "gumbel"):
            key = derive_key(master, "account", "bench", 1, scheme=scheme, vocab_size=49152)
            payloads[scheme] = watermark_payload(key)
    conv = [{"role": "user", "content": PROMPT}]

    def run(batch: int, payload: str | None, tokens: int) -> float:
        extra = {EXTRA_ARGS_KEY: payload} if payload else None
        params = [
            SamplingParams(max_tokens=tokens, temperature=1.0, seed=i, ignore_eos=True, extra_args=extra)
            for i in range(batch)
        ]
        t = time.perf_counter()
        outs = llm.chat([conv] * batch, params, use_tqdm=False)
        seconds = time.perf_counter() - t
        assert sum(len(o.outputs[0].token_ids) for o in outs) == batch * tokens
        return batch * tokens / seconds

    cells = []
    for batch in BATCHES:  # modes interleaved within each repeat: load drift hits them alike
        for payload in payloads.values():
            run(batch, payload, 8)  # warm-up (shapes of this batch size)
        rates: dict[str, list[float]] = {mode: [] for mode in payloads}
        for _ in range(repeats):
            for mode, payload in payloads.items():
                rates[mode].append(run(batch, payload, max_tokens))
        for mode, values in rates.items():
            cell = {"engine": engine, "mode": mode, "batch": batch, "tok_s": statistics.median(values)}
            cells.append({**cell, "runs": values})
            print(f"[bench] {engine:9s} {mode:6s} batch {batch:2d}: {cell['tok_s']:7.1f} tok/s", flush=True)
    return {"engine": engine, "start_s": start_s, "cells": cells}


def _processor_cost(steps: int = 30) -> list[dict[str, Any]]:
    """Milliseconds per decoding step spent in the processor alone (numpy, no engine), per batch size."""
    import numpy as np

    from antidistill.watermark.adapters.vllm import WatermarkBatch, watermark_payload
    from antidistill.watermark.keys import derive_key

    class Params:
        def __init__(self, payload: str) -> None:
            self.extra_args = {"antidistill_wm": payload}
            self.temperature, self.top_p, self.top_k = 1.0, 1.0, 0

    class Update:
        def __init__(self, added: list[Any]) -> None:
            self.added, self.removed, self.moved = added, [], []

    rng = np.random.default_rng(0)
    out = []
    for scheme in ("kgw", "gumbel"):
        key = derive_key(b"benchmark-master-secret-00000000", "account", "bench", 1, scheme=scheme)
        payload = watermark_payload(key)
        for batch in BATCHES:
            wm = WatermarkBatch()
            outputs: list[list[int]] = [[] for _ in range(batch)]
            prompts = [rng.integers(0, 49152, 20).tolist() for _ in range(batch)]
            wm.update(Update([(i, Params(payload), prompts[i], outputs[i]) for i in range(batch)]))
            base = (rng.standard_normal((batch, 49152)) * 3).astype(np.float32)
            times = []
            for _ in range(steps):
                logits = base.copy()
                t = time.perf_counter()
                wm.apply(logits)
                times.append((time.perf_counter() - t) * 1000)
                for o in outputs:
                    o.append(int(rng.integers(0, 49152)))  # fresh windows: Gumbel does its full work
            ms = statistics.median(times)
            out.append(
                {
                    "scheme": scheme,
                    "batch": batch,
                    "ms_per_step": round(ms, 3),
                    "ms_per_row": round(ms / batch, 3),
                }
            )
            print(f"[bench] processor alone {scheme:6s} batch {batch:2d}: {ms:7.2f} ms/step", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eager", action="store_true", help="enforce_eager (no torch.compile)")
    ap.add_argument("--micro-only", action="store_true", help="only re-measure the processor alone (numpy)")
    ap.add_argument("--engine", choices=("baseline", "processor"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; else vLLM reserves ~92% of RAM
    if args.engine:  # child: one engine, partial result to args.out
        result = _engine(args.model, args.engine, args.max_tokens, args.repeats, args.eager)
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh)
        return 0
    if args.micro_only:
        with open(args.out, encoding="utf-8") as fh:
            existing = json.load(fh)
        existing["processor_alone"] = _processor_cost()
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(existing, fh, indent=2)
        return 0
    import torch
    import vllm

    parts = []
    for engine in ("baseline", "processor"):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
            part = tmp.name
        cmd = [sys.executable, __file__, args.model, part, "--engine", engine]
        cmd += ["--max-tokens", str(args.max_tokens), "--repeats", str(args.repeats)]
        cmd += ["--eager"] if args.eager else []
        subprocess.run(cmd, check=True, timeout=3600)
        with open(part, encoding="utf-8") as fh:
            parts.append(json.load(fh))
        os.unlink(part)
    cells = [c for p in parts for c in p["cells"]]
    base = {c["batch"]: c["tok_s"] for c in cells if c["engine"] == "baseline"}
    for c in cells:
        c["vs_baseline"] = round(c["tok_s"] / base[c["batch"]], 3)
    out = {
        "benchmark": "vllm_watermark",
        "what": "vLLM CPU generation throughput with / without antidistill's watermark logits processor",
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "model": os.path.basename(args.model.rstrip("/")),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "enforce_eager": args.eager,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "engine_start_s": {p["engine"]: round(p["start_s"], 1) for p in parts},
        "cells": cells,
        "processor_alone": _processor_cost(),
        "date": time.strftime("%Y-%m-%d"),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=2)
    print(f"[bench] wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
