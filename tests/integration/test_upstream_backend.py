"""UpstreamBackend against the fake OpenAI-compatible upstream, served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from antidistill.backends.base import Backend, ChatMessage, GenerationRequest, SamplingParams
from antidistill.backends.upstream import INVALID_RESPONSE, UpstreamBackend
from antidistill.errors import (
    BackendError,
    BackendOverloadedError,
    BackendTimeoutError,
    ConfigError,
    InvalidRequestError,
)
from antidistill.evaluation.fake_upstream import FakeUpstreamConfig, FakeUpstreamStats, create_app
from antidistill.gateway.app import create_app as create_gateway
from antidistill.settings import UpstreamBackendSettings
from tests.helpers import free_port, gateway_settings, live_server

API_KEY = "sk-test-secret-0123456789"
Factory = Callable[..., UpstreamBackend]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeUpstreamStats]]:
    app = create_app(FakeUpstreamConfig(model="fake-upstream"))
    with live_server(app, timeout=30) as url:
        yield url + "/v1", app.state.stats


@pytest.fixture
async def make_backend(upstream: tuple[str, FakeUpstreamStats]) -> AsyncIterator[Factory]:
    made: list[UpstreamBackend] = []

    def make(
        mode: str = "", chunk_delay_ms: float = 0, url: str | None = None, **settings: Any
    ) -> UpstreamBackend:
        headers = {"x-fake-mode": mode, "x-fake-chunk-delay-ms": str(chunk_delay_ms)}
        s = UpstreamBackendSettings(url=url or upstream[0], **{"api_key": API_KEY, **settings})
        b = UpstreamBackend(s, "served-model", extra_headers=headers)
        made.append(b)
        return b

    yield make
    for b in made:
        await b.aclose()


def _chat(
    text: str = "the quick brown fox", n: int = 1, max_tokens: int = 64, **extra: Any
) -> GenerationRequest:
    messages = [{"role": "system", "content": "be nice"}, {"role": "user", "content": text, "name": "bob"}]
    return GenerationRequest(
        request_id="r1",
        model="served-model",
        kind="chat",
        params=SamplingParams(max_tokens=max_tokens, n=n, stop=("END",), seed=7, temperature=0.5),
        messages=tuple(ChatMessage(m["role"], m["content"]) for m in messages),
        extra={"model": "served-model", "messages": messages, **extra},
    )


async def test_complete_chat_passes_fields_through(
    make_backend: Factory, upstream: tuple[str, FakeUpstreamStats]
) -> None:
    b = make_backend(upstream_model="up-model")
    assert isinstance(b, Backend) and b.name == "openai" and b.model_ids() == ["served-model"]
    req = _chat(user="u-42", custom_field={"x": 1}, max_completion_tokens=999, stream_options={"a": 1})
    c = await b.complete(req)
    assert [ch.text for ch in c.choices] == ["the quick brown fox"]
    assert c.choices[0].finish_reason == "stop" and c.choices[0].reasoning is None
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (6, 4)
    sent, stats = upstream[1].last_body, upstream[1]
    assert sent["model"] == "up-model" and sent["stream"] is False and "stream_options" not in sent
    assert sent["max_tokens"] == 64 and "max_completion_tokens" not in sent
    assert (sent["n"], sent["stop"], sent["seed"], sent["temperature"]) == (1, ["END"], 7, 0.5)
    assert sent["user"] == "u-42" and sent["custom_field"] == {"x": 1}
    assert sent["messages"][1] == {"role": "user", "content": "the quick brown fox", "name": "bob"}
    assert stats.last_authorization == f"Bearer {API_KEY}"


async def test_complete_text_n_reasoning_and_length(make_backend: Factory) -> None:
    req = GenerationRequest(
        "r", "served-model", "completion", SamplingParams(max_tokens=2, n=2), prompt="a b c"
    )
    c = await make_backend().complete(req)
    assert [(ch.index, ch.text, ch.finish_reason) for ch in c.choices] == [
        (0, "a b", "length"),
        (1, "a b", "length"),
    ]
    r = await make_backend("reasoning").complete(_chat())
    assert r.choices[0].reasoning == "let me think"


async def test_missing_usage_is_approximated(make_backend: Factory) -> None:
    c = await make_backend("no-usage").complete(_chat("one two three four five six seven eight"))
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0
    chunks = [ch async for ch in make_backend("no-usage").stream(_chat("one two three"))]
    final = chunks[-1].usage
    assert final is not None and final.completion_tokens >= 3 and final.prompt_tokens > 0


async def test_stream_arrives_chunk_by_chunk(
    make_backend: Factory, upstream: tuple[str, FakeUpstreamStats]
) -> None:
    stats = upstream[1]
    words = [f"w{i}" for i in range(8)]
    done_before = stats.streams_completed
    t0 = time.perf_counter()
    stamps: list[float] = []
    completed_at_first: int | None = None
    texts: list[str] = []
    usage = None
    async for ch in make_backend(chunk_delay_ms=60).stream(_chat(" ".join(words))):
        if ch.text:
            stamps.append(time.perf_counter() - t0)
            texts.append(ch.text)
            if completed_at_first is None:
                completed_at_first = stats.streams_completed
        usage = ch.usage or usage
    assert "".join(texts).split() == words and len(texts) == len(words)
    assert completed_at_first == done_before  # the upstream was still generating
    assert stamps[-1] - stamps[0] >= 0.3  # 7 gaps of 60 ms: chunks were not buffered
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (10, 8)
    sent = stats.last_body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_stream_finish_reason_and_reasoning(make_backend: Factory) -> None:
    chunks = [ch async for ch in make_backend("reasoning").stream(_chat("a b c", max_tokens=2))]
    assert [c.reasoning for c in chunks if c.reasoning] == ["let me think"]
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["length"]
    assert chunks[-1].usage is not None and all(c.usage is None for c in chunks[:-1])


FAULTS = [
    ("garbage", BackendError, "upstream_error"),
    ("bad-shape", BackendError, "upstream_error"),
    ("broken-stream", BackendError, "upstream_error"),
    ("500", BackendError, "upstream_error"),
    ("429", BackendOverloadedError, "overloaded"),
    ("400", InvalidRequestError, None),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(("mode", "cls", "code"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_fault_modes_map_to_errors(
    make_backend: Factory, mode: str, cls: type[Exception], code: str | None, stream: bool
) -> None:
    b = make_backend(mode)
    with pytest.raises(cls) as info:
        if stream:
            [ch async for ch in b.stream(_chat())]
        else:
            await b.complete(_chat())
    err = info.value
    assert type(err) is cls
    assert isinstance(err, BackendError | InvalidRequestError)
    assert err.code == code
    assert API_KEY not in err.message and "0123456789" not in err.message
    if mode in ("garbage", "bad-shape", "broken-stream"):
        assert err.message.startswith(INVALID_RESPONSE)
    if mode == "429":
        assert err.status == 503 and err.headers == {"retry-after": "1"}
    if mode == "400":
        assert err.status == 400 and "bad temperature" in err.message and "Bearer ***" in err.message


async def test_error_object_mid_stream_is_a_backend_error(make_backend: Factory) -> None:
    got: list[str] = []
    with pytest.raises(BackendError) as info:
        async for ch in make_backend("stream-error").stream(_chat("a b c d e f")):
            got.append(ch.text)
    assert got and type(info.value) is BackendError
    assert "engine died" in info.value.message and API_KEY not in info.value.message


async def test_start_warns_when_the_upstream_is_down(
    make_backend: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    await make_backend().start()
    assert not caplog.records
    await make_backend(url=f"http://127.0.0.1:{free_port()}/v1").start()
    assert "does not answer" in caplog.text


async def test_url_credentials_are_sent_but_never_shown(
    make_backend: Factory, upstream: tuple[str, FakeUpstreamStats]
) -> None:
    url = upstream[0].replace("http://", "http://operator:hunter2-pw@")
    b = make_backend("400", url=url, api_key=None)
    with pytest.raises(InvalidRequestError) as info:
        await b.complete(_chat())
    auth = upstream[1].last_authorization
    assert auth is not None and auth.startswith("Basic ") and auth[6:] not in info.value.message
    assert "hunter2" not in info.value.message and "operator" not in info.value.message


async def test_unreachable_port_fails_fast(make_backend: Factory) -> None:
    port = free_port()
    b = make_backend(url=f"http://127.0.0.1:{port}/v1")
    t0 = time.perf_counter()
    for attempt in (b.complete(_chat()), anext(b.stream(_chat()))):
        with pytest.raises(BackendError) as info:
            await attempt
        assert type(info.value) is BackendError and info.value.code == "upstream_unavailable"
        assert info.value.status == 502 and info.value.message.startswith("upstream unreachable")
        assert "127.0.0.1" not in info.value.message and str(port) not in info.value.message
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_read_timeout_maps_to_timeout_error(make_backend: Factory, stream: bool) -> None:
    b = make_backend("slow", read_timeout_s=0.3)
    t0 = time.perf_counter()
    with pytest.raises(BackendTimeoutError) as info:
        if stream:
            await anext(b.stream(_chat()))
        else:
            await b.complete(_chat())
    assert info.value.status == 504 and time.perf_counter() - t0 < 3.0


async def test_silence_mid_stream_maps_to_timeout_error(make_backend: Factory) -> None:
    got: list[str] = []
    with pytest.raises(BackendTimeoutError) as info:
        async for ch in make_backend(chunk_delay_ms=1000, read_timeout_s=0.3).stream(_chat("a b c")):
            got.append(ch.text)
    assert got == ["a"] and "sent nothing for 0.3s" in info.value.message


async def _until(pred: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


async def test_closing_the_stream_closes_the_upstream(
    make_backend: Factory, upstream: tuple[str, FakeUpstreamStats]
) -> None:
    stats = upstream[1]
    aborted, completed = stats.streams_aborted, stats.streams_completed
    gen = make_backend(chunk_delay_ms=50).stream(_chat(" ".join(["word"] * 60)))
    got = [await anext(gen) for _ in range(3)]
    assert all(c.text for c in got)
    await gen.aclose()
    assert await _until(lambda: stats.streams_aborted == aborted + 1)
    assert stats.streams_completed == completed


async def test_cancelled_completion_closes_the_upstream(
    make_backend: Factory, upstream: tuple[str, FakeUpstreamStats]
) -> None:
    stats = upstream[1]
    before = stats.requests
    task = asyncio.ensure_future(make_backend("slow").complete(_chat()))
    assert await _until(lambda: stats.requests == before + 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_connection_is_reused_after_a_full_stream(make_backend: Factory) -> None:
    b = make_backend()
    for _ in range(3):
        assert [c async for c in b.stream(_chat("a b"))][-1].usage is not None
    connector = b._session.connector if b._session else None  # aiohttp internals: the idle pool
    assert connector is not None and not connector._acquired
    assert sum(len(idle) for idle in connector._conns.values()) == 1


async def test_a_full_pool_is_overload_not_a_hang(make_backend: Factory) -> None:
    b = make_backend(chunk_delay_ms=50, max_connections=1, connect_timeout_s=0.3)
    gen = b.stream(_chat(" ".join(["word"] * 60)))
    assert (await anext(gen)).text  # holds the only connection
    t0 = time.perf_counter()
    with pytest.raises(BackendOverloadedError) as info:
        await b.complete(_chat())
    assert "in flight" in info.value.message and time.perf_counter() - t0 < 2.0
    await gen.aclose()
    assert (await b.complete(_chat("free again"))).choices[0].text == "free again"


async def test_closed_backend_refuses_until_started_again(make_backend: Factory) -> None:
    b = make_backend()
    await b.aclose()
    with pytest.raises(BackendError) as info:
        await b.complete(_chat())
    assert info.value.code == "upstream_unavailable"
    await b.start()
    assert (await b.complete(_chat("back"))).choices[0].text == "back"


def test_bad_config_fails_at_construction() -> None:
    with pytest.raises(ConfigError):
        UpstreamBackend(UpstreamBackendSettings(), "m")
    with pytest.raises(ConfigError):
        UpstreamBackend(UpstreamBackendSettings(url="ftp://host/v1"), "m")
    with pytest.raises(ConfigError):
        UpstreamBackend(UpstreamBackendSettings(url="http:///v1"), "m")


def test_gateway_in_front_of_the_upstream(upstream: tuple[str, FakeUpstreamStats], tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, **{"backend.kind": "openai", "backend.upstream.url": upstream[0]})
    app = create_gateway(settings)
    with TestClient(app) as client:
        rt = app.state.rt
        token, _ = rt.store.create_api_key(rt.store.create_account("alice", "standard", {}).id)
        auth = {"Authorization": f"Bearer {token}"}
        body = {"model": "test-model", "messages": [{"role": "user", "content": "hello big world"}]}
        r = client.post("/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "hello big world"
        stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        with client.stream("POST", "/v1/chat/completions", json=stream_body, headers=auth) as s:
            frames = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        chunks = [orjson.loads(f) for f in frames[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == "hello big world" and chunks[-1]["usage"]["completion_tokens"] == 3
        r = client.post("/v1/chat/completions", json=body, headers={**auth, "x-fake-mode": "500"})
        assert r.status_code == 200  # client headers are not forwarded upstream
