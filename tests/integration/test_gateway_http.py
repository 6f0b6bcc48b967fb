"""The public API over HTTP (in-process app, fake backend, SQLite store)."""

from __future__ import annotations

import orjson
import pytest

from antidistill.errors import BackendError
from tests.integration.conftest import Gateway


def _events(gw: Gateway) -> list:
    gw.flush_events()
    return list(gw.rt.store.iter_events())


def test_chat_completion_shape_usage_and_event(gateway: Gateway) -> None:
    r = gateway.chat()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and r.headers["x-request-id"] == body["id"]
    assert body["model"] == "test-model"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    u = body["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0

    (ev,) = _events(gateway)
    assert ev.id == body["id"] and ev.status == 200 and ev.endpoint == "chat"
    assert ev.key_id == gateway.key_id and ev.account_id is not None
    assert ev.request["messages"][0]["content"] == "hello there world"
    assert ev.response == choice["message"]["content"]
    assert ev.completion_tokens == u["completion_tokens"] and ev.prompt_tokens == u["prompt_tokens"]
    assert ev.params["max_tokens"] == 256 and ev.latency_ms > 0
    assert ev.client_ip and ev.user_agent


def test_text_completion(gateway: Gateway) -> None:
    r = gateway.client.post(
        "/v1/completions",
        json={"model": "test-model", "prompt": "one two three", "max_tokens": 2},
        headers=gateway.auth(),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def _sse(text: str) -> list[str]:
    assert text.endswith("\n\n")
    frames = [f for f in text.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    return [f[len("data: ") :] for f in frames]


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_framing_and_usage(gateway: Gateway, include_usage: bool) -> None:
    body = {
        "model": "test-model",
        "stream": True,
        "messages": [{"role": "user", "content": "a b c d"}],
        "stream_options": {"include_usage": include_usage},
    }
    with gateway.client.stream("POST", "/v1/chat/completions", json=body, headers=gateway.auth()) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    payloads = _sse(text)
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content.split() == ["a", "b", "c", "d"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1
    usage_chunks = [c for c in chunks if not c["choices"]]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0]["usage"]["completion_tokens"] == 4
    else:
        assert usage_chunks == [] and all("usage" not in c for c in chunks)
    (ev,) = _events(gateway)
    assert ev.stream and ev.status == 200 and ev.response == content and ev.completion_tokens == 4


def test_models_health_metrics(gateway: Gateway) -> None:
    r = gateway.client.get("/v1/models", headers=gateway.auth())
    assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == ["test-model"]
    assert gateway.client.get("/v1/models").status_code == 401
    h = gateway.client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    gateway.chat()
    m = gateway.client.get("/metrics").text
    assert 'antidistill_requests_total{endpoint="chat",status="200"} 1.0' in m
    assert "antidistill_events_submitted_total" in m


def _assert_error(r, status: int, code: str | None = None, param: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


def test_bad_inputs_get_envelopes_and_are_logged(gateway: Gateway) -> None:
    c, auth = gateway.client, gateway.auth()
    url = "/v1/chat/completions"
    msgs = [{"role": "user", "content": "x"}]
    cases = [
        (
            c.post(url, content=b"{not json", headers={**auth, "content-type": "application/json"}),
            400,
            "invalid_json",
            None,
        ),
        (c.post(url, content=b"", headers=auth), 400, "invalid_body", None),
        (c.post(url, json=[1, 2], headers=auth), 400, "invalid_body", None),
        (
            c.post(url, json={"model": "test-model"}, headers=auth),
            400,
            "missing_required_parameter",
            "messages",
        ),
        (
            c.post(url, json={"model": "test-model", "messages": msgs, "temperature": "hot"}, headers=auth),
            400,
            "invalid_value",
            "temperature",
        ),
        (
            c.post(url, json={"model": "nope", "messages": msgs}, headers=auth),
            404,
            "model_not_found",
            "model",
        ),
        (c.post(url, json={"model": "test-model", "messages": msgs, "n": 4}, headers=auth), 400, None, "n"),
        (
            c.post(url, json={"model": "test-model", "messages": msgs, "max_tokens": 513}, headers=auth),
            400,
            None,
            "max_tokens",
        ),
        (
            c.post(
                url,
                json={"model": "test-model", "messages": [{"role": "user", "content": "x" * 70_000}]},
                headers=auth,
            ),
            413,
            "request_too_large",
            None,
        ),
        (c.post(url, json={"model": "test-model", "messages": msgs}), 401, "missing_api_key", None),
        (
            c.post(
                url,
                json={"model": "test-model", "messages": msgs},
                headers={"Authorization": "Bearer ad-x-y"},
            ),
            401,
            "invalid_api_key",
            None,
        ),
        (
            c.post(
                url, json={"model": "test-model", "messages": msgs}, headers={"Authorization": "Basic abc"}
            ),
            401,
            "missing_api_key",
            None,
        ),
    ]
    for r, status, code, param in cases:
        _assert_error(r, status, code, param)
    _assert_error(c.get(url, headers=auth), 405)
    _assert_error(c.get("/v1/nothing-here", headers=auth), 404, "not_found")
    # still serving
    assert gateway.chat().status_code == 200
    events = _events(gateway)
    statuses = sorted(e.status for e in events)
    assert statuses == sorted([status for _, status, _, _ in cases] + [200])
    unauth = [e for e in events if e.status == 401]
    assert all(e.account_id is None for e in unauth)


def test_revoked_key_is_refused_at_once(gateway: Gateway) -> None:
    assert gateway.chat().status_code == 200
    assert gateway.rt.store.revoke_api_key(gateway.key_id)
    err = _assert_error(gateway.chat(), 401, "invalid_api_key")
    assert "revoked" in err["message"]


def test_backend_failure_is_502_and_gateway_keeps_serving(gateway: Gateway) -> None:
    gateway.rt.backend.fail_next(BackendError("upstream exploded"))  # type: ignore[attr-defined]
    err = _assert_error(gateway.chat(), 502, "upstream_error")
    assert err["type"] == "server_error"
    assert gateway.chat().status_code == 200
    statuses = sorted(e.status for e in _events(gateway))
    assert statuses == [200, 502]


def test_stream_failure_before_first_byte_gets_a_status(gateway: Gateway) -> None:
    gateway.rt.backend.fail_next(BackendError("down"))  # type: ignore[attr-defined]
    r = gateway.chat({"model": "test-model", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    _assert_error(r, 502)


def test_admin_api_needs_its_credential(gateway: Gateway) -> None:
    c = gateway.client
    assert c.get("/admin/accounts").status_code == 401
    assert c.get("/admin/accounts", headers=gateway.auth()).status_code == 401  # a user key is not admin
    r = c.post(
        "/admin/accounts",
        json={"name": "bob", "tier": "new"},
        headers={"Authorization": "Bearer test-admin-token"},
    )
    assert r.status_code == 201, r.text
    new_key = r.json()["api_key"]
    assert gateway.chat(headers=gateway.auth(new_key)).status_code == 200
    names = [
        a["name"]
        for a in c.get("/admin/accounts", headers={"Authorization": "Bearer test-admin-token"}).json()["data"]
    ]
    assert names == ["alice", "bob"] or sorted(names) == ["alice", "bob"]
    kid = r.json()["key_id"]
    assert (
        c.post(f"/admin/keys/{kid}/revoke", headers={"Authorization": "Bearer test-admin-token"}).status_code
        == 200
    )
    assert gateway.chat(headers=gateway.auth(new_key)).status_code == 401
