"""The ``watermark_canary`` action end to end in the gateway: a flagged account's answers carry its
KGW canary key on top of its Gumbel key (both recorded: the event names the canary key, the store
holds the key record an audit reads), an unflagged account's answers carry the Gumbel key only.
In-process app, SQLite, the local backend with a tiny random Llama (no teacher download)."""

from __future__ import annotations

import time
from pathlib import Path

from starlette.testclient import TestClient

from antidistill.backends.local import LocalBackend
from antidistill.gateway.app import create_app
from antidistill.gateway.runtime import Runtime
from antidistill.risk.types import Finding
from antidistill.settings import LocalBackendSettings
from tests.helpers import gateway_settings
from tests.unit.test_local_engine import ByteTokenizer, tiny_model


class VocabTokenizer(ByteTokenizer):
    def get_vocab(self) -> dict[str, int]:  # what a key record's tokenizer fingerprint reads
        return {f"<{i}>": i for i in range(260)}


def test_flagged_accounts_get_the_kgw_canary_key_too(tmp_path: Path) -> None:
    backend = LocalBackend(
        LocalBackendSettings(max_batch_size=4, max_context_tokens=256),
        "tiny",
        model=tiny_model(),
        tokenizer=VocabTokenizer(),
    )
    app = create_app(gateway_settings(tmp_path, **{"backend.served_model": "tiny"}), backend=backend)
    with TestClient(app, raise_server_exceptions=False) as client:
        rt: Runtime = app.state.rt
        ids, keys = {}, {}
        for name in ("harvester", "customer"):
            acc = rt.store.create_account(name, "standard")
            keys[name], ids[name] = rt.store.create_api_key(acc.id)[0], acc.id
        rt.store.record_findings(
            [
                Finding(
                    subject_kind="account",
                    subject_id=ids["harvester"],
                    ts=time.time(),
                    score=0.99,
                    flagged=True,
                    reasons=("test",),
                    requests_seen=500,
                )
            ]
        )
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
        for name in ("harvester", "customer"):
            for stream in (False, True):
                r = client.post(
                    "/v1/chat/completions",
                    json={**body, "stream": stream},
                    headers={"Authorization": f"Bearer {keys[name]}"},
                )
                assert r.status_code == 200, r.text
        rt.events.flush()  # type: ignore[attr-defined]
        by_scheme = {
            name: {r["scheme"] for r in rt.store.watermark_key_records("account", ids[name])} for name in ids
        }
        events = {name: list(rt.store.iter_events(account_id=ids[name])) for name in ids}
    assert by_scheme == {"harvester": {"gumbel", "kgw"}, "customer": {"gumbel"}}
    for e in events["harvester"]:
        assert e.watermark_key_id is not None and e.params["canary_key_id"] != e.watermark_key_id
        assert e.params["policy"]["watermark_scheme"] == "kgw_canary"
    for e in events["customer"]:
        assert e.watermark_key_id is not None and "canary_key_id" not in e.params
