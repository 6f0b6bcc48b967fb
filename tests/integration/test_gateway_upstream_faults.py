"""A broken upstream behind the gateway: each failure gets its status and envelope, is logged, and
the gateway keeps serving (JSON and streaming)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from antidistill.backends.upstream import UpstreamBackend
from antidistill.evaluation.fake_upstream import FakeUpstreamConfig
from antidistill.evaluation.fake_upstream import create_app as create_upstream
from antidistill.gateway.app import create_app
from antidistill.settings import UpstreamBackendSettings
from tests.helpers import free_port, gateway_settings, live_server


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with live_server(create_upstream(FakeUpstreamConfig()), timeout=30) as url:
        yield url + "/v1"


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("garbage", 502, "upstream_error"),
        ("bad-shape", 502, "upstream_error"),
        ("500", 502, "upstream_error"),
        ("429", 503, "overloaded"),
        ("slow", 504, "upstream_timeout"),
        ("unreachable", 502, "upstream_unavailable"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_fault(
    upstream_url: str, tmp_path: Path, mode: str, status: int, code: str, stream: bool
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1" if mode == "unreachable" else upstream_url
    backend = UpstreamBackend(
        UpstreamBackendSettings(url=url, read_timeout_s=0.5, connect_timeout_s=1.0),
        "test-model",
        extra_headers={"x-fake-mode": mode},
    )
    app = create_app(gateway_settings(tmp_path, **{"backend.kind": "openai"}), backend=backend)
    with TestClient(app, raise_server_exceptions=False) as client:
        rt = app.state.rt
        token, _ = rt.store.create_api_key(rt.store.create_account("u", "standard", {}).id)
        body = {"model": "test-model", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(2):  # the same clean answer twice: nothing was left broken by the first
            r = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == status, r.text
            err = r.json()["error"]
            assert err["code"] == code and err["type"] == "server_error" and err["message"]
            assert "127.0.0.1" not in err["message"]  # the upstream's address is not revealed
        assert client.get("/healthz").status_code == 200
        rt.events.flush()
        events = list(rt.store.iter_events())
        assert [e.status for e in events] == [status, status]
        assert all(e.error_code == code and e.stream == stream for e in events)
