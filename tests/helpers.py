"""Test helpers: a live uvicorn server in a thread, and gateway settings for tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from antidistill.settings import Settings, load_settings

ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
        "backend.kind": "fake",
        "backend.served_model": "test-model",
        "server.admin_token": ADMIN_TOKEN,
        "events.spill_dir": str(tmp_path / "spill"),
        "events.flush_interval_ms": 20,
        "limits.max_body_bytes": 64 * 1024,
        "limits.max_tokens_cap": 512,
        "limits.max_n": 3,
        "watermark.master_secret_file": str(tmp_path / "wm.secret"),
        "risk.enabled": False,  # the risk tests turn it on with a small calibration
    }
    base.update(overrides)
    return load_settings(None, base)


@contextmanager
def live_server(app: Any, timeout: float = 120.0) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a background thread; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("server thread died during start-up (see log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"server did not start within {timeout}s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
