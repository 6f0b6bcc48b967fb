"""Real gateway processes for the multi-replica and durability tests.

``Deployment`` is one isolated deployment on the shared test servers: a fresh PostgreSQL schema
(``?schema=`` in the database URL), its own Redis key prefix, one admin token. ``Deployment.start()``
runs ``.venv/bin/antidistill serve --backend fake`` on a free port (configured through
``ANTIDISTILL_*`` variables, as an operator would) and waits for ``/healthz``. ``close()`` (the
fixture finalizer) SIGKILLs whatever still runs, drops the schema and deletes the Redis keys.

Absent servers fail the test at once with a message saying how to start them (``require_servers``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import psycopg
import pytest

from tests.conftest_store import PG_URL, _libpq_url, postgres_problem
from tests.helpers import free_port

REDIS_URL = os.environ.get("ANTIDISTILL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BIN = Path(sys.executable).parent
ADMIN_TOKEN = "replica-test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MODEL = "test-model"
START_TIMEOUT_S = 60.0
T = TypeVar("T")


@functools.cache
def redis_problem() -> str | None:
    import redis

    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2) as r:
            r.ping()
        return None
    except Exception as e:
        return (
            f"Redis not reachable at {REDIS_URL}: start redis on 127.0.0.1:6379 "
            "(`sudo service redis-server start` or `docker run -d -p 6379:6379 redis:7`), "
            f"or set ANTIDISTILL_TEST_REDIS_URL. ({type(e).__name__}: {e})"
        )


def require_servers(*, redis: bool) -> None:
    """FAIL now (never skip, never hang) when a server the test needs does not answer."""
    problems = [postgres_problem(), redis_problem() if redis else None]
    message = " | ".join(p for p in problems if p)
    if message:
        pytest.fail(message, pytrace=False)


def poll(fetch: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last value: {value!r:.1500}")
        time.sleep(0.02)


@dataclass
class Replica:
    """One ``antidistill serve`` process."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"replica {self.name} exited with status {self.proc.returncode} during start-up:\n"
                    f"{self.log_tail()}",
                    pytrace=False,
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"replica {self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 40.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"replica {self.name} did not exit within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (graceful: in-flight requests finish, events are flushed) and wait. uvicorn re-raises
        the signal once it has shut down, so the exit status is -SIGTERM (or 0)."""
        self.signal(signal.SIGTERM)
        status = self.wait_exit()
        assert status in (0, -signal.SIGTERM), f"replica {self.name} exited with {status}:\n{self.log_tail()}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text


@dataclass
class Deployment:
    tmp: Path
    redis: bool = True
    schema: str = field(default_factory=lambda: f"t_{uuid.uuid4().hex[:16]}")
    redis_prefix: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:12]}:rl")
    replicas: list[Replica] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return f"{PG_URL}?schema={self.schema}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process of this deployment (ANTIDISTILL_* from outside is dropped)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANTIDISTILL_")}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "ANTIDISTILL_DATABASE_URL": self.database_url,
                "ANTIDISTILL_BACKEND__KIND": "fake",
                "ANTIDISTILL_BACKEND__SERVED_MODEL": MODEL,
                "ANTIDISTILL_SERVER__ADMIN_TOKEN": ADMIN_TOKEN,
                "ANTIDISTILL_SERVER__LOG_LEVEL": "info",  # "gateway stopped; events flushed" is info
                "ANTIDISTILL_WATERMARK__MASTER_SECRET": "replica-test-master-secret",
                "ANTIDISTILL_RISK__ENABLED": "false",  # the risk engine runs as `antidistill analyze`
                "ANTIDISTILL_EVENTS__FLUSH_INTERVAL_MS": "20",
            }
        )
        if self.redis:
            env["ANTIDISTILL_REDIS_URL"] = REDIS_URL
            env["ANTIDISTILL_LIMITS__SHARED__KEY_PREFIX"] = self.redis_prefix
        env.update(extra)
        return env

    def start(
        self,
        name: str,
        *,
        spill_dir: Path | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> Replica:
        """Start a replica; ``env`` adds ``ANTIDISTILL_*`` settings to the deployment's."""
        port = free_port()
        spill = spill_dir or self.tmp / f"spill-{name}"
        log_path = self.tmp / f"{name}-{len(self.replicas)}.log"
        log = open(log_path, "ab")  # noqa: SIM115 (closed by Replica.kill)
        env = self.env(ANTIDISTILL_EVENTS__SPILL_DIR=str(spill), **(env or {}))
        proc = subprocess.Popen(
            [str(BIN / "antidistill"), "serve", "--port", str(port)],
            env=env,
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        replica = Replica(name, port, proc, log_path, log)
        self.replicas.append(replica)
        if wait:
            replica.wait_ready()
        return replica

    def run_cli(self, *args: str, timeout: float = 300.0, **extra: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [str(BIN / "antidistill"), *args],
            env=self.env(**extra),
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert r.returncode == 0, f"antidistill {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}"
        return r

    # the database --------------------------------------------------------------------------
    @contextlib.contextmanager
    def sql(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(_libpq_url(PG_URL), connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            yield conn

    def event_ids(self) -> list[str]:
        """Every event id in the deployment's table (duplicates kept, if there were any)."""
        with self.sql() as conn:
            return [row[0] for row in conn.execute("SELECT id FROM events")]

    # clean-up ------------------------------------------------------------------------------
    def close(self) -> None:
        for r in self.replicas:
            r.kill()
        with contextlib.suppress(Exception), self.sql() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        if self.redis:
            import redis

            with contextlib.suppress(Exception), redis.Redis.from_url(REDIS_URL, socket_timeout=2) as r:
                keys = list(r.scan_iter(f"{self.redis_prefix}:*"))
                if keys:
                    r.delete(*keys)


def create_account(replica: Replica, name: str, tier: str = "standard") -> tuple[str, str]:
    r = httpx.post(f"{replica.url}/admin/accounts", json={"name": name, "tier": tier}, headers=ADMIN)
    assert r.status_code == 201, r.text
    body = r.json()
    return body["account"]["id"], body["api_key"]


def chat_body(text: str = "hello there world", stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 32,
        "stream": stream,
        **extra,
    }


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                out.append(value)
    return out
