"""LocalBackend over the tiny model: the Backend protocol, streaming, usage, cancellation, errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from antidistill.backends.base import (
    Backend,
    ChatMessage,
    Chunk,
    GenerationRequest,
    SamplingParams,
    WatermarkAssignment,
)
from antidistill.backends.local import LocalBackend
from antidistill.errors import BackendError, InvalidRequestError
from antidistill.settings import LocalBackendSettings
from tests.unit.test_local_engine import EOS, ByteTokenizer, Recorder, encode_bytes, tiny_model


@pytest.fixture
async def backend() -> AsyncIterator[LocalBackend]:
    settings = LocalBackendSettings(max_batch_size=4, max_context_tokens=64)
    b = LocalBackend(settings, "tiny", model=tiny_model(), tokenizer=ByteTokenizer())
    await b.start()
    yield b
    await b.aclose()


def chat(text: str = "hi", **kw: Any) -> GenerationRequest:
    wm = kw.pop("watermark", None)
    params = SamplingParams(**{"max_tokens": 8, "temperature": 0.0, **kw})
    return GenerationRequest("r", "tiny", "chat", params, messages=(ChatMessage("user", text),), watermark=wm)


def completion(prompt: str, **kw: Any) -> GenerationRequest:
    params = SamplingParams(**{"max_tokens": 8, "temperature": 0.0, **kw})
    return GenerationRequest("r", "tiny", "completion", params, prompt=prompt)


async def test_is_a_backend_and_serves_its_model_id(backend: LocalBackend) -> None:
    assert isinstance(backend, Backend) and backend.name == "local"
    assert backend.model_ids() == ["tiny"]


async def test_stream_concatenates_to_complete_with_usage_last(backend: LocalBackend) -> None:
    req = chat("hello there", temperature=1.0, seed=5, n=2, max_tokens=10)
    chunks = [c async for c in backend.stream(req)]
    assert chunks[-1].usage is not None and all(c.usage is None for c in chunks[:-1])
    full = await backend.complete(req)
    prompt_len = len(encode_bytes("<user>hello there\n<assistant>"))
    assert full.usage.prompt_tokens == prompt_len == chunks[-1].usage.prompt_tokens
    assert full.usage.completion_tokens == chunks[-1].usage.completion_tokens
    assert (
        full.usage.completion_tokens <= 20
        and full.usage.total_tokens == prompt_len + full.usage.completion_tokens
    )
    for choice in full.choices:
        streamed = "".join(c.text for c in chunks if c.index == choice.index and c.usage is None)
        assert streamed == choice.text
        finishes = [c.finish_reason for c in chunks if c.index == choice.index and c.finish_reason]
        assert finishes == [choice.finish_reason]
    assert full.watermark_key_id is None


async def test_completion_kind_tokenizes_the_prompt(backend: LocalBackend) -> None:
    out = await backend.complete(completion("abc", max_tokens=3))
    assert (
        out.usage.prompt_tokens == 3
        and out.usage.completion_tokens == 3
        and out.choices[0].finish_reason == "length"
    )


async def test_watermark_sampler_is_used_and_reported(backend: LocalBackend) -> None:
    rec = Recorder(script=[*encode_bytes("marked"), EOS])
    wm = WatermarkAssignment(sampler=rec, key_id="k1", config_hash="h1")
    out = await backend.complete(chat("x", watermark=wm, max_tokens=20))
    assert out.choices[0].text == "marked" and out.choices[0].finish_reason == "stop"
    assert (out.watermark_key_id, out.watermark_config_hash) == ("k1", "h1")
    assert rec.contexts[0] == tuple(encode_bytes("<user>x\n<assistant>"))


async def test_context_overflow_is_an_invalid_request(backend: LocalBackend) -> None:
    with pytest.raises(InvalidRequestError) as e:
        await backend.complete(chat("x" * 100))
    assert (e.value.param, e.value.code) == ("messages", "context_length_exceeded")
    with pytest.raises(InvalidRequestError) as e:
        await backend.complete(completion("y" * 64))
    assert (e.value.param, e.value.code) == ("prompt", "context_length_exceeded")


async def _first_chunks(stream: Any, k: int) -> list[Chunk]:
    return [await stream.__anext__() for _ in range(k)]


async def test_closing_the_stream_stops_generation(backend: LocalBackend) -> None:
    victim = Recorder(script=[*encode_bytes("a" * 60)], block_at=3)
    wm = WatermarkAssignment(sampler=victim, key_id="k", config_hash="h")
    stream = backend.stream(chat("v", watermark=wm, max_tokens=40))
    other = asyncio.create_task(backend.complete(chat("o", max_tokens=30)))
    await _first_chunks(stream, 2)
    await stream.aclose()  # client went away
    victim.release.set()
    done = await other
    assert done.usage.completion_tokens == 30
    assert len(victim.chosen) <= 4


async def test_cancelling_complete_stops_generation(backend: LocalBackend) -> None:
    victim = Recorder(script=[*encode_bytes("b" * 60)], block_at=5)
    wm = WatermarkAssignment(sampler=victim, key_id="k", config_hash="h")
    task = asyncio.create_task(backend.complete(chat("v", watermark=wm, max_tokens=40)))
    assert await asyncio.to_thread(victim.reached.wait, 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    victim.release.set()
    after = await backend.complete(chat("o", max_tokens=4))  # the engine serves on
    assert after.usage.completion_tokens == 4
    assert len(victim.chosen) <= 6


async def test_not_started_and_mismatched_injection() -> None:
    b = LocalBackend(LocalBackendSettings(), "m", model=tiny_model(), tokenizer=ByteTokenizer())
    with pytest.raises(BackendError):
        await b.complete(chat())
    with pytest.raises(ValueError):
        LocalBackend(LocalBackendSettings(), "m", model=tiny_model())
