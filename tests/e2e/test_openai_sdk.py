"""The official OpenAI Python SDK against a live gateway: the embedded SmolLM2 teacher, and the SDK's
error mapping and retry behaviour (fake backend, faster)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from antidistill.gateway.app import create_app
from antidistill.store import open_store
from tests.helpers import gateway_settings, live_server


def _key(db_url: str, name: str = "sdk-user") -> str:
    store = open_store(db_url)
    try:
        store.migrate()
        acc = store.get_account(name) or store.create_account(name, "standard")
        return store.create_api_key(acc.id)[0]
    finally:
        store.close()


@pytest.fixture(scope="module")
def teacher_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, object]]:
    tmp = tmp_path_factory.mktemp("teacher")
    settings = gateway_settings(
        tmp, **{"backend.kind": "local", "backend.served_model": "smollm2-135m-instruct"}
    )
    key = _key(settings.database_url)
    app = create_app(settings)
    with live_server(app, timeout=600) as url:
        yield url, key, app


@pytest.mark.model
def test_sdk_chat_nonstream_and_stream_on_teacher(teacher_gateway: tuple[str, str, object]) -> None:
    url, key, _app = teacher_gateway
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    r = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    assert "Paris" in (r.choices[0].message.content or "")
    assert r.usage is not None and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage = [], None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(parts) == r.choices[0].message.content  # greedy: same text either way
    assert usage is not None and usage.completion_tokens == r.usage.completion_tokens

    comp = client.completions.create(
        model="smollm2-135m-instruct", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert comp.choices[0].text and comp.usage is not None
    models = [m.id for m in client.models.list()]
    assert models == ["smollm2-135m-instruct"]


@pytest.mark.model
def test_disconnect_mid_stream_stops_generation(teacher_gateway: tuple[str, str, object]) -> None:
    url, key, app = teacher_gateway
    body = {
        "model": "smollm2-135m-instruct",
        "stream": True,
        "max_tokens": 400,
        "temperature": 0.8,
        "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
    }
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ) as r:
        assert r.status_code == 200
        for i, _ in enumerate(r.iter_lines()):
            if i >= 6:
                break
    rt = app.state.rt  # type: ignore[attr-defined]
    engine = rt.backend.engine
    # 400 tokens take ~16 s at 25 tok/s; a cancelled row leaves the batch within one decode step
    deadline = time.monotonic() + 5
    while engine.running_rows and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.running_rows == 0, "generation went on after the client disconnected"
    deadline = time.monotonic() + 20
    ev = None
    while time.monotonic() < deadline:
        rt.events.flush()
        evs = [e for e in rt.store.iter_events() if e.stream and e.params.get("max_tokens") == 400]
        if evs:
            ev = evs[0]
            break
        time.sleep(0.2)
    assert ev is not None, "the disconnected stream was not logged"
    assert ev.status == 499 and ev.error_code == "client_disconnected"


def test_sdk_errors_and_retries(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path)
    key = _key(settings.database_url)
    app = create_app(settings)
    with live_server(app) as url:
        bad = openai.OpenAI(base_url=url + "/v1", api_key="ad-000000000000-nope", max_retries=2)
        with pytest.raises(openai.AuthenticationError) as e:
            bad.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}])
        assert e.value.code == "invalid_api_key"
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=2)
        with pytest.raises(openai.NotFoundError) as e2:
            client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
        assert e2.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as e3:
            client.chat.completions.create(
                model="test-model", messages=[{"role": "user", "content": "x"}], n=9
            )
        assert e3.value.param == "n"

        # one transient 502: the SDK retries and succeeds, unchanged client code
        from antidistill.errors import BackendError

        app.state.rt.backend.fail_next(BackendError("transient"))
        ok = client.with_options(timeout=10).chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "retry me"}]
        )
        assert ok.choices[0].message.content
        app.state.rt.events.flush()
        statuses = [ev.status for ev in app.state.rt.store.iter_events()]
        assert statuses.count(502) == 1 and statuses.count(200) == 1


@pytest.mark.model
def test_answers_carry_the_accounts_watermark(teacher_gateway: tuple[str, str, object]) -> None:
    """Sampled answers are marked with the account's key; the event names the key and config hash."""
    import numpy as np

    from antidistill.watermark.detect import Detector

    url, key, app = teacher_gateway
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    prompts = [
        "Write a detailed essay about the history of the bicycle.",
        "Explain in depth how volcanoes form and erupt.",
        "Describe, step by step, how to bake bread at home.",
        "Tell a long story about a lighthouse keeper and a storm.",
    ]
    texts = [
        client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": p}],
            max_tokens=200,
            temperature=1.0,
        )
        .choices[0]
        .message.content
        or ""
        for p in prompts
    ]
    rt = app.state.rt  # type: ignore[attr-defined]
    rt.events.flush()
    events = [e for e in rt.store.iter_events() if e.params.get("temperature") == 1.0 and e.status == 200]
    assert len(events) == len(prompts)
    directory = rt.watermarker.directory
    acc_key = directory.current("account", events[0].account_id)
    assert {e.watermark_key_id for e in events} == {acc_key.key_id}
    assert {e.watermark_config_hash for e in events} == {acc_key.config_hash}

    tok = rt.backend._tokenizer
    seqs = [np.asarray(tok(t, add_special_tokens=False).input_ids, dtype=np.int64) for t in texts]
    other = directory.keyring.derive("account", "someone-else", 1)
    ours = Detector().detect(seqs, [acc_key], pool=True)
    theirs = Detector().detect(seqs, [other], pool=True)
    # ~600 scored tokens from a 135M model: the pooled test is decisive under the right key only
    assert ours.p_value < 1e-6, ours.explanation
    assert theirs.p_value > 1e-3, theirs.explanation
