"""Reasoning protection end to end: the in-process gateway (upstream backend) in front of the fake
reasoning upstream on loopback, real JSON and SSE requests. An account under ``strip_reasoning``
(an operator's decision, or the engine's flag with the shipped policy) receives zero characters of
the reasoning, whether it comes in tags, in ``reasoning_content`` or copied into the answer; an
account without the action receives exactly what the upstream sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from antidistill.evaluation.fake_reasoning import (
    LEAK_KINDS,
    answer_for,
    leaked_chars,
    reasoning_for,
    translation_for,
)
from antidistill.evaluation.fake_upstream import create_app as create_upstream
from antidistill.gateway.app import create_app
from antidistill.gateway.runtime import Runtime
from antidistill.hardening import REDACTED, summary
from antidistill.risk.types import Finding
from tests.helpers import ADMIN_TOKEN, gateway_settings, live_server

PROMPTS = [
    "How many apples are left after the market closes?",
    "A library lends books all week; how many remain on the shelves?",
    "Count the boats left in the harbour after the storm.",
]
DETECTED = tuple(k for k in LEAK_KINDS if k != "translated")


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with live_server(create_upstream(), timeout=30) as url:
        yield url + "/v1"


class Env:
    def __init__(self, client: TestClient, app: Any, keys: dict[str, str]) -> None:
        self.client, self.app, self.keys = client, app, keys

    @property
    def rt(self) -> Runtime:
        rt: Runtime = self.app.state.rt
        return rt

    def ask(self, who: str, prompt: str, stream: bool, **fake: Any) -> dict[str, Any]:
        """The reply as the client sees it: content and reasoning field, and the raw body."""
        body: dict[str, Any] = {
            "model": "test-model",
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
            **{f"x_fake_{k}": v for k, v in fake.items()},
        }
        r = self.client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {self.keys[who]}"}
        )
        assert r.status_code == 200, r.text
        if not stream:
            msg = r.json()["choices"][0]["message"]
            return {"content": msg["content"], "reasoning": msg.get("reasoning_content"), "raw": r.content}
        content, reasoning, frames = [], [], []
        for block in r.content.split(b"\n\n"):
            if not block.startswith(b"data: ") or block == b"data: [DONE]":
                continue
            frame = orjson.loads(block[6:])
            frames.append(frame)
            for choice in frame["choices"]:
                content.append(choice["delta"].get("content") or "")
                reasoning.append(choice["delta"].get("reasoning_content") or "")
        return {"content": "".join(content), "reasoning": "".join(reasoning) or None, "frames": frames}


def gateway(tmp_path: Path, upstream_url: str, **overrides: Any) -> Any:
    settings = gateway_settings(
        tmp_path, **{"backend.kind": "openai", "backend.upstream.url": upstream_url, **overrides}
    )
    return create_app(settings)


@pytest.fixture
def env(tmp_path: Path, upstream_url: str) -> Iterator[Env]:
    app = gateway(tmp_path, upstream_url)
    with TestClient(app) as client:
        rt: Runtime = app.state.rt
        keys = {}
        for name in ("alice", "bob"):
            acc = rt.store.create_account(name, "standard")
            keys[name] = rt.store.create_api_key(acc.id)[0]
        r = client.post(
            "/v1/admin/accounts/alice/decision",
            json={"action": "strip_reasoning", "reason": "harvests reasoning"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert r.status_code == 201, r.text
        yield Env(client, app, keys)


def seen(reply: dict[str, Any]) -> str:
    return reply["content"] + "\n" + (reply["reasoning"] or "")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("mode", ["think", "reasoning-field"])
def test_no_reasoning_character_reaches_a_protected_account(env: Env, mode: str, stream: bool) -> None:
    for prompt in PROMPTS:
        r, t = reasoning_for(prompt), translation_for(prompt)
        for leak in (None, *DETECTED):
            fake = {"mode": mode, **({"leak": leak} if leak else {})}
            got = env.ask("alice", prompt, stream, **fake)
            assert leaked_chars(r, t, seen(got)) == 0, (leak, got["content"])
            assert got["reasoning"] is None
            assert got["content"].startswith(answer_for(prompt))
            assert (REDACTED in got["content"]) == (leak is not None)
            if stream:  # no frame carries the reasoning field, none is empty
                assert all("reasoning_content" not in c["delta"] for f in got["frames"] for c in f["choices"])
            # bob, without the action, gets all of it
            plain = env.ask("bob", prompt, stream, **fake)
            assert leaked_chars(r, t, seen(plain)) >= len(r) - 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_translated_copy_is_not_caught(env: Env, stream: bool) -> None:  # documented weakness
    prompt = PROMPTS[0]
    got = env.ask("alice", prompt, stream, mode="think", leak="translated")
    assert "<think>" not in got["content"] and REDACTED not in got["content"]
    r = reasoning_for(prompt)
    assert leaked_chars(r, translation_for(prompt), seen(got)) > 0.9 * len(r)


def test_accounts_without_the_action_get_the_upstream_answer_unchanged(env: Env, upstream_url: str) -> None:
    import httpx

    prompt = PROMPTS[1]
    body = {"model": "test-model", "messages": [{"role": "user", "content": prompt}]}
    direct = httpx.post(f"{upstream_url}/chat/completions", json={**body, "x_fake_mode": "reasoning-field"})
    msg = direct.json()["choices"][0]["message"]
    got = env.ask("bob", prompt, False, mode="reasoning-field")
    assert (got["content"], got["reasoning"]) == (msg["content"], msg["reasoning_content"])
    got = env.ask("bob", prompt, True, mode="think", leak="base64")
    assert got["content"].startswith(f"<think>{reasoning_for(prompt)}</think>") and got["reasoning"] is None


def _norm(reply: dict[str, Any]) -> Any:
    """The reply without its per-request id and timestamp."""
    if "frames" in reply:
        return [{k: v for k, v in f.items() if k not in ("id", "created")} for f in reply["frames"]]
    body = orjson.loads(reply["raw"])
    return {k: v for k, v in body.items() if k not in ("id", "created")}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_benign_answers_are_byte_identical(env: Env, stream: bool) -> None:
    prompt = "Explain why the sky looks blue at noon and red at sunset, in two sentences."
    a, b = env.ask("alice", prompt, stream), env.ask("bob", prompt, stream)
    assert a["content"] == prompt and _norm(a) == _norm(b)  # same frames, byte for byte but the id
    # a "<" that may start a tag is held until the next chunk: same text, one frame fewer per "<"
    prompt = "Tell me if 3 < 4 and whether <b>bold</b> tags or a <thin> line matter here."
    a, b = env.ask("alice", prompt, stream), env.ask("bob", prompt, stream)
    assert a["content"] == b["content"] == prompt and a["reasoning"] is b["reasoning"] is None
    if not stream:
        assert _norm(a) == _norm(b)


def test_events_record_what_was_removed(env: Env) -> None:
    prompt = PROMPTS[2]
    env.ask("alice", prompt, True, mode="think", leak="hex")
    env.ask("alice", prompt, False, mode="reasoning-field")
    env.ask("bob", prompt, False, mode="think")
    env.rt.events.flush()  # type: ignore[attr-defined]
    events = sorted(env.rt.store.iter_events(), key=lambda e: e.ts)
    alice = [e for e in events if e.params.get("reasoning")]
    assert len(alice) == 2 and all(e.status == 200 for e in alice)
    streamed, plain = sorted(alice, key=lambda e: not e.stream)
    assert streamed.params["reasoning"]["copies"] == 1 and streamed.params["reasoning"]["blocks"] == 1
    assert streamed.params["reasoning"]["escaped_chars"] == 0
    assert plain.params["reasoning"]["reasoning_chars"] == len(reasoning_for(prompt))
    assert streamed.params["policy"]["actions"] == ["strip_reasoning"]
    assert REDACTED in (streamed.response or "") and "<think>" not in (streamed.response or "")


def test_summary_mode_and_the_engines_flag(tmp_path: Path, upstream_url: str) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[strip_reasoning]\nmode = "summary"\n')
    app = gateway(tmp_path, upstream_url, **{"policy.file": str(policy)})
    with TestClient(app) as client:
        rt: Runtime = app.state.rt
        acc = rt.store.create_account("carol", "trusted")
        env = Env(client, app, {"carol": rt.store.create_api_key(acc.id)[0]})
        prompt = PROMPTS[0]
        r = reasoning_for(prompt)
        assert env.ask("carol", prompt, False, mode="reasoning-field")["reasoning"] == r  # not flagged yet
        finding = Finding(
            subject_kind="account",
            subject_id=acc.id,
            ts=time.time(),
            score=0.99,
            flagged=True,
            reasons=("harvests reasoning",),
            requests_seen=300,
        )
        rt.store.record_findings([finding])
        rt.enforcer.forget(acc.id)  # type: ignore[union-attr]
        for stream in (False, True):
            got = env.ask("carol", prompt, stream, mode="reasoning-field", leak="rot13")
            assert got["reasoning"] == summary(len(r)) and got["content"].startswith(answer_for(prompt))
            assert leaked_chars(r, translation_for(prompt), seen(got)) == 0
            got = env.ask("carol", prompt, stream, mode="think", tag="reasoning")
            assert got["content"] == f"<reasoning>{summary(len(r))}</reasoning>\n\n{answer_for(prompt)}"
