"""A client that goes away while its request body is being read (a client-side timeout under load)
is logged as 499 ``client_disconnected``, not as a server crash with a traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.integration.conftest import Gateway


def test_disconnect_while_reading_the_body(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    sent: list[dict[str, Any]] = []

    async def call() -> None:
        messages = [
            {"type": "http.request", "body": b'{"model": "test-model", "mess', "more_body": True},
            {"type": "http.disconnect"},
        ]

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if len(messages) > 1 else messages[0]

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"authorization", f"Bearer {gateway.key}".encode()),
                (b"content-type", b"application/json"),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
        }
        await gateway.app(scope, receive, send)

    portal = gateway.client.portal
    assert portal is not None
    with caplog.at_level(logging.WARNING):
        portal.call(call)
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    gateway.flush_events()
    [event] = list(gateway.rt.store.iter_events())
    assert event.status == 499 and event.error_code == "client_disconnected"
