from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
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
