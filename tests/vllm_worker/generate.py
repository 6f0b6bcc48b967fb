"""Generate with vLLM (CPU) through antidistill's watermark logits processor; write token ids as JSON.

Runs in the vLLM venv (``scripts/setup_vllm_cpu.sh``), driven by ``tests/integration/
test_watermark_vllm.py``. It never sees a watermark secret: each run carries the payload the gateway
would send (``vllm_xargs`` of the adapter), exactly as a request to a vLLM server would.

    .venv-vllm/bin/python tests/vllm_worker/generate.py CONFIG.json OUT.json

CONFIG: {"model": HF dir, "prompts": [...], "max_tokens": 128, "seed": 0, "enforce_eager": true,
         "runs": [{"name", "payload" (str or null), "temperature", "top_p", "top_k", "n_prompts"}],
         "must_reject": {"name": payload, ...}}
OUT:    {"vllm": version, "load_s", "runs": {name: {"docs": [{"prompt_ids", "ids"}], "seconds"}},
         "rejected": {name: error message or null}}
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def main(config_path: str, out_path: str) -> int:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; else vLLM reserves ~92% of RAM
    import vllm
    from vllm import LLM, SamplingParams

    from antidistill.watermark.adapters.vllm import EXTRA_ARGS_KEY, PROCESSOR_FQCN

    with open(config_path, encoding="utf-8") as fh:
        cfg: dict[str, Any] = json.load(fh)
    t0 = time.perf_counter()
    llm = LLM(
        model=cfg["model"],
        dtype="float32",
        max_model_len=int(cfg.get("max_model_len", 1024)),
        seed=int(cfg.get("seed", 0)),
        enforce_eager=bool(cfg.get("enforce_eager", True)),
        logits_processors=[PROCESSOR_FQCN],
    )
    out: dict[str, Any] = {"vllm": vllm.__version__, "load_s": time.perf_counter() - t0, "runs": {}}
    conversations = [[{"role": "user", "content": p}] for p in cfg["prompts"]]
    for run in cfg["runs"]:
        n = int(run.get("n_prompts", len(conversations)))
        extra = {EXTRA_ARGS_KEY: run["payload"]} if run.get("payload") else None
        params = [
            SamplingParams(
                max_tokens=int(cfg["max_tokens"]),
                temperature=float(run.get("temperature", 1.0)),
                top_p=float(run.get("top_p", 1.0)),
                top_k=int(run.get("top_k", 0)),
                seed=int(cfg.get("seed", 0)) + i,
                ignore_eos=True,
                extra_args=extra,
            )
            for i in range(n)
        ]
        t = time.perf_counter()
        results = llm.chat(conversations[:n], params, use_tqdm=False)
        seconds = time.perf_counter() - t
        docs = [
            {"prompt_ids": list(r.prompt_token_ids), "ids": list(r.outputs[0].token_ids)} for r in results
        ]
        out["runs"][run["name"]] = {"docs": docs, "seconds": seconds}
        print(f"[worker] {run['name']}: {n} x {cfg['max_tokens']} tokens in {seconds:.1f} s", flush=True)
    out["rejected"] = {}
    for name, payload in cfg.get("must_reject", {}).items():
        try:
            llm.chat(
                conversations[:1],
                SamplingParams(max_tokens=4, extra_args={EXTRA_ARGS_KEY: payload}),
                use_tqdm=False,
            )
            out["rejected"][name] = None
        except Exception as exc:  # vLLM raises VLLMValidationError (a ValueError) for a bad payload
            out["rejected"][name] = f"{type(exc).__name__}: {exc}"
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    return 0


if __name__ == "__main__":  # vLLM starts its engine in spawned processes: the guard is required
    if len(sys.argv) != 3:
        print("usage: generate.py CONFIG.json OUT.json", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
