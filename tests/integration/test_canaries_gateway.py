"""Canaries at the gateway: an account under ``watermark_canary`` gets its secret canary sentences in
JSON and streamed answers (recorded in the event), an ordinary account never does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from antidistill.gateway.canaries import canary_server
from antidistill.settings import WatermarkSettings
from antidistill.watermark.canaries import CanaryBook, completion_candidates
from antidistill.watermark.keystore import load_master_secret
from tests.integration.test_enforcement import gateway


def _sse_text(body: str) -> tuple[str, list[dict[str, Any]]]:
    frames = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    objs = [json.loads(f) for f in frames[:-1]]
    text = "".join(
        (c["delta"].get("content") or "") if "delta" in c else c.get("text", "")
        for o in objs
        for c in o["choices"]
    )
    return text, objs


def _book(env: Any) -> CanaryBook:
    """The deployment's pool, derived independently of the gateway from the same master secret."""
    server = canary_server(env.rt)  # built at start-up from the master secret
    assert server is not None
    wm = env.rt.settings.watermark
    secret = load_master_secret(WatermarkSettings(master_secret_file=wm.master_secret_file), create=False)
    book = CanaryBook(secret, wm.canary_pool_size, wm.canary_per_account)
    assert book.pool_id == server.book.pool_id
    return book


def _has_candidate(text: str) -> bool:
    words = set(text.replace(".", " ").split())
    return any(c in words for c in completion_candidates())


def test_flagged_account_gets_canaries_in_json_and_sse_and_the_event_records_them(tmp_path: Path) -> None:
    always: dict[str, Any] = {"watermark.canary_rate": 1.0}
    with gateway(tmp_path, manual_clock=False, **always) as env:
        env.flag("tara", score=0.95, flagged=False)  # elevated; the trusted tier: watermark_canary only
        book = _book(env)
        mine = set(book.subset(env.ids["tara"]))
        prompts = [f"tell me about topic number {i} please" for i in range(6)]
        served: list[int] = []
        for i, p in enumerate(prompts):
            msgs = [{"role": "user", "content": p}]
            r = env.chat("tara", messages=msgs, stream=bool(i % 2))
            assert r.status_code == 200, r.text
            if i % 2:
                text, objs = _sse_text(r.text)
                finish = [c for o in objs for c in o["choices"] if c.get("finish_reason")]
                assert len(finish) == 1 and finish[0]["finish_reason"] == "stop"
                # the canary is a content chunk of its own, sent before the finish chunk
                last_content = [c for o in objs for c in o["choices"] if c["delta"].get("content")][-1]
                assert last_content["delta"]["content"].startswith("\n\n")
                assert last_content["finish_reason"] is None
            else:
                text = r.json()["choices"][0]["message"]["content"]
            assert text.startswith(p), text  # the fake backend echoes; the answer itself is untouched
            choice = book.choose(env.ids["tara"], f"user\x1f{p}", 1.0)
            assert choice is not None and choice.canary.index in mine
            assert text == p + "\n\n" + choice.text
            served.append(choice.canary.index)
            # asking again gives exactly the same answer (deterministic per account and prompt)
            again = env.chat("tara", messages=msgs)
            assert again.json()["choices"][0]["message"]["content"] == text
        events = [e for e in env.events("tara") if e.status == 200]
        recorded = [e.params["canary"] for e in events if "canary" in e.params]
        assert len(recorded) == len(events)  # rate 1.0: every answer carried one
        assert {c["id"] for c in recorded} == set(served)
        assert all(c["pool"] == book.pool_id and c["choices"] == 1 for c in recorded)
        assert all(
            book.canary(c["id"]).completion in (e.response or "")
            for c, e in zip(recorded, events, strict=True)
        )

        # n = 2: every choice carries the same sentence; a choice cut by max_tokens carries none
        r = env.chat("tara", messages=[{"role": "user", "content": "two answers please"}], n=2)
        texts = [c["message"]["content"] for c in r.json()["choices"]]
        assert texts[0] == texts[1] and texts[0].startswith("two answers please\n\n")
        r = env.chat("tara", messages=[{"role": "user", "content": "one two three four"}], max_tokens=2)
        assert r.json()["choices"][0]["message"]["content"] == "one two"

        # an ordinary account never gets one, JSON or stream
        for i, p in enumerate(prompts):
            r = env.chat("bob", messages=[{"role": "user", "content": p}], stream=bool(i % 2))
            text = _sse_text(r.text)[0] if i % 2 else r.json()["choices"][0]["message"]["content"]
            assert text == p and not _has_candidate(text)
        assert not any("canary" in e.params for e in env.events("bob"))

        # completions endpoint too
        r = env.chat("tara", path="/v1/completions", prompt="complete me")
        choice = book.choose(env.ids["tara"], "complete me", 1.0)
        assert choice is not None and r.json()["choices"][0]["text"] == "complete me\n\n" + choice.text


def test_canaries_can_be_switched_off(tmp_path: Path) -> None:
    off: dict[str, Any] = {"watermark.canaries": False}
    with gateway(tmp_path, manual_clock=False, **off) as env:
        env.flag("tara", score=0.95, flagged=False)
        r = env.chat("tara", messages=[{"role": "user", "content": "hello"}])
        assert r.json()["choices"][0]["message"]["content"] == "hello"
        assert not any("canary" in e.params for e in env.events("tara"))
