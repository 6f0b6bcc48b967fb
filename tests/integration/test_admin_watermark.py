"""``POST /v1/watermark/detect``: admin credential only, bounded input, the same verdict as the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from antidistill.cli.main import app
from antidistill.gateway.admin_watermark import MAX_TEXTS
from antidistill.watermark import texts as wm_texts
from antidistill.watermark.keystore import load_master_secret
from tests.helpers import ADMIN_TOKEN
from tests.integration.conftest import Gateway
from tests.integration.test_watermark_cli import (
    HARVESTER,
    HUMAN,
    marked_texts,
    record_accounts,
    text_tokenizer,
)

PATH = "/v1/watermark/detect"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(autouse=True)
def _cached_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wm_texts, "load_text_tokenizer", lambda settings: text_tokenizer())


def _error(r: Any) -> dict[str, Any]:
    err: dict[str, Any] = r.json()["error"]
    return err


def test_only_the_admin_credential_is_accepted(gateway: Gateway) -> None:
    body = {"texts": ["some text"]}
    r = gateway.client.post(PATH, json=body)
    assert r.status_code == 401 and _error(r)["code"] == "invalid_admin_token"
    r = gateway.client.post(PATH, json=body, headers=gateway.auth())  # a valid user API key
    assert r.status_code == 401 and _error(r)["code"] == "invalid_admin_token"
    r = gateway.client.post(PATH, json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    # the admin credential is not a user API key either: the public API refuses it
    assert gateway.chat(headers=ADMIN).status_code == 401


def test_bad_bodies_are_refused_before_any_work(gateway: Gateway) -> None:
    post = gateway.client.post
    r = post(PATH, content=b'{"texts": ["' + b"a" * 70_000 + b'"]}', headers=ADMIN)
    assert r.status_code == 413 and _error(r)["code"] == "request_too_large"
    r = post(PATH, content=b"{not json", headers=ADMIN)
    assert r.status_code == 400 and _error(r)["code"] == "invalid_json"
    cases: list[tuple[Any, str]] = [
        ([], "texts"),
        ({}, "texts"),
        ({"texts": []}, "texts"),
        ({"texts": [5]}, "text"),
        ({"texts": [{"text": "a", "prompt": 1}]}, "prompt"),
        ({"texts": ["a"], "pool": "yes"}, "pool"),
        ({"texts": ["a"], "alpha": 2}, "alpha"),
        ({"texts": ["a"], "looks": 0}, "looks"),
        ({"texts": ["a"], "scope": "galaxy"}, "scope"),
        ({"texts": ["a"], "attribute": True, "key_id": "wk_1"}, "key_id"),
        ({"texts": ["a"], "secret": True}, "secret"),
        ({"texts": ["a"] * (MAX_TEXTS + 1)}, "texts"),
    ]
    for body, param in cases:
        r = post(PATH, json=body, headers=ADMIN)
        assert r.status_code == 400, (body, r.text)
        assert _error(r)["param"] == param, (body, r.text)
    # no keys recorded yet: a clear 404, not a crash
    load_master_secret(gateway.rt.settings.watermark)
    r = post(PATH, json={"texts": ["a"]}, headers=ADMIN)
    assert r.status_code == 404 and "no watermark keys" in _error(r)["message"]


def _cli(gateway: Gateway, tmp_path: Path, texts: list[str], *args: str) -> dict[str, Any]:
    settings = gateway.rt.settings
    config = tmp_path / "cli.toml"
    config.write_text(
        f'database_url = "{settings.database_url}"\n'
        f'[watermark]\nmaster_secret_file = "{settings.watermark.master_secret_file}"\n'
    )
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    r = CliRunner().invoke(app, ["watermark", "detect", str(src), "--config", str(config), *args])
    assert r.exit_code == 0, r.output
    out: dict[str, Any] = json.loads(r.stdout)
    for doc in out["documents"]:
        assert doc.pop("line") == doc["index"] + 1
    return out


def test_verdict_is_the_clis(gateway: Gateway, tmp_path: Path) -> None:
    secret = load_master_secret(gateway.rt.settings.watermark)
    harvester, keys = record_accounts(gateway.rt.store, secret, n=55)
    texts = marked_texts(harvester, 3, seed=11) + HUMAN[:2]
    r = gateway.client.post(PATH, json={"texts": texts, "attribute": True}, headers=ADMIN)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [a["account"] for a in out["accounts"]] == [HARVESTER]
    assert out["accounts"][0]["key_id"] == harvester.key_id and out["significant"]
    assert [d["log10_p"] < -3 for d in out["documents"]] == [True, True, True, False, False]
    assert out == _cli(gateway, tmp_path, texts, "--attribute")
    assert secret.hex() not in r.text and all(k.secret.hex() not in r.text for k in keys)

    body = {"texts": [{"text": t} for t in texts], "pool": True, "key_id": harvester.key_id}
    r = gateway.client.post(PATH, json=body, headers=ADMIN)
    assert r.status_code == 200 and r.json()["mode"] == "pooled" and r.json()["n_keys"] == 1
    assert r.json() == _cli(gateway, tmp_path, texts, "--pool", "--key-id", harvester.key_id)

    r = gateway.client.post(PATH, json={"texts": HUMAN, "attribute": True}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["accounts"] == [] and not r.json()["significant"]
