"""LiteLLM's proxy as the peer of ``benchmarks/gateway_protections.py`` (its own venv:
``scripts/setup_litellm.sh``)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import httpx

from benchmarks._load import free_port as _free_port
from benchmarks._load import pinned as _pinned

LITELLM_CONFIG = """model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: {upstream}
      api_key: fake-upstream-key
      rpm: 10000000
      tpm: 1000000000
general_settings:
  master_key: {master_key}
litellm_settings:
  suppress_debug_info: true
router_settings:
  redis_host: {redis_host}
  redis_port: {redis_port}
  routing_strategy: usage-based-routing-v2
  enable_pre_call_checks: true
"""
LITELLM_KEY = "sk-bench-master"


def start_litellm(
    binary: Path, upstream: str, redis_url: str, tmp: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """LiteLLM's proxy with its per-deployment RPM/TPM limits counted in Redis (usage-based-routing-v2)
    and master-key auth. Postgres logging is NOT on: it needs Prisma's engines, downloaded at start
    from binaries.prisma.sh, which this machine cannot reach (see the results' ``litellm.notes``)."""
    from urllib.parse import urlparse

    r = urlparse(redis_url)
    config = tmp / "litellm.yaml"
    config.write_text(
        LITELLM_CONFIG.format(
            upstream=upstream, master_key=LITELLM_KEY, redis_host=r.hostname, redis_port=r.port or 6379
        )
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            *_pinned(1),
            str(binary.resolve()),
            "--config",
            str(config),
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env={**env, "LITELLM_LOG": "ERROR"},
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"litellm exited with status {proc.returncode} during start-up")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/liveliness", timeout=1).status_code == 200:
                return proc, url
        if time.monotonic() > deadline:
            raise TimeoutError(f"litellm did not come up at {url}")
        time.sleep(0.2)
