from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.testclient import TestClient

from antidistill.gateway.app import create_app
from antidistill.gateway.runtime import Runtime
from tests.helpers import gateway_settings


@dataclass
class Gateway:
    client: TestClient
    app: Any
    key: str
    key_id: str

    @property
    def rt(self) -> Runtime:
        rt: Runtime = self.app.state.rt
        return rt

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def chat(self, body: dict[str, Any] | None = None, **kw: Any) -> Any:
        payload = (
            body
            if body is not None
            else {"model": "test-model", "messages": [{"role": "user", "content": "hello there world"}]}
        )
        headers = kw.pop("headers", None) or self.auth()
        return self.client.post("/v1/chat/completions", json=payload, headers=headers, **kw)

    def flush_events(self) -> None:
        writer = self.rt.events
        writer.flush()  # type: ignore[attr-defined]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    settings = gateway_settings(tmp_path)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        rt: Runtime = app.state.rt
        acc = rt.store.create_account("alice", "standard", {"org": "acme"})
        token, key = rt.store.create_api_key(acc.id)
        yield Gateway(client=client, app=app, key=token, key_id=key.id)


# Redis (127.0.0.1:6379 by default) -----------------------------------------------------------------
# Redis down makes each test that uses ``prefix`` FAIL at once (one 2 s check per session), never hang.
REDIS_URL = os.environ.get("ANTIDISTILL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _sync_client() -> redis.Redis:
    return redis.Redis.from_url(
        REDIS_URL, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )


@functools.cache
def _redis_problem() -> str | None:
    try:
        with _sync_client() as r:
            r.ping()
        return None
    except Exception as e:
        return (
            f"Redis not reachable at {REDIS_URL}: start redis on 127.0.0.1:6379 "
            "(`sudo service redis-server start` or `docker run -d -p 6379:6379 redis:7`), "
            f"or set ANTIDISTILL_TEST_REDIS_URL. ({type(e).__name__}: {e})"
        )


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh Redis key prefix for one test; its keys are deleted afterwards."""
    problem = _redis_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    p = f"antidistill:test:{uuid.uuid4().hex}"
    yield p
    with _sync_client() as r:
        keys = list(r.scan_iter(match=f"{p}:*", count=1000))
        if keys:
            r.delete(*keys)
