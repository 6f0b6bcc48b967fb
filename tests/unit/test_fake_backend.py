from __future__ import annotations

import asyncio
import time

import pytest

from antidistill.backends.base import Backend, ChatMessage, Chunk, GenerationRequest, SamplingParams
from antidistill.backends.fake import FakeBackend
from antidistill.errors import BackendError
from antidistill.settings import FakeBackendSettings


def _chat(text: str, max_tokens: int = 50, n: int = 1, stop: tuple[str, ...] = ()) -> GenerationRequest:
    return GenerationRequest(
        request_id="r1",
        model="m",
        kind="chat",
        params=SamplingParams(max_tokens=max_tokens, n=n, stop=stop),
        messages=(ChatMessage("system", "be brief"), ChatMessage("user", "old"), ChatMessage("user", text)),
    )


async def _collect(backend: FakeBackend, req: GenerationRequest) -> list[Chunk]:
    return [c async for c in backend.stream(req)]


def test_is_a_backend() -> None:
    b = FakeBackend(FakeBackendSettings(), "m")
    assert isinstance(b, Backend) and b.name == "fake" and b.model_ids() == ["m"]


async def test_echo_reply_and_usage() -> None:
    c = await FakeBackend().complete(_chat("alpha beta  gamma"))
    assert [ch.text for ch in c.choices] == ["alpha beta gamma"]
    assert c.choices[0].finish_reason == "stop"
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (2 + 1 + 3, 3)


async def test_fixed_reply_truncated_to_max_tokens() -> None:
    b = FakeBackend(FakeBackendSettings(reply="one two three four five"))
    c = await b.complete(_chat("ignored", max_tokens=2))
    assert c.choices[0].text == "one two" and c.choices[0].finish_reason == "length"
    assert c.usage.completion_tokens == 2


async def test_completion_kind_echoes_the_prompt() -> None:
    req = GenerationRequest("r", "m", "completion", SamplingParams(max_tokens=10), prompt="say this")
    c = await FakeBackend().complete(req)
    assert c.choices[0].text == "say this" and c.usage.prompt_tokens == 2


async def test_n_and_stop_strings() -> None:
    c = await FakeBackend().complete(_chat("a b STOP c d", n=3, stop=("zzz", "STOP")))
    assert [ch.index for ch in c.choices] == [0, 1, 2]
    assert {ch.text for ch in c.choices} == {"a b"}
    assert all(ch.finish_reason == "stop" for ch in c.choices)
    assert c.usage.completion_tokens == 6


async def test_stream_one_chunk_per_word_then_usage() -> None:
    chunks = await _collect(FakeBackend(), _chat("a b c d", max_tokens=3))
    texts = [c.text for c in chunks if c.text]
    assert texts == ["a", " b", " c"]
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_n_choices_and_empty_reply() -> None:
    chunks = await _collect(FakeBackend(), _chat("x y", n=2))
    by_index = {i: "".join(c.text for c in chunks if c.index == i and c.usage is None) for i in (0, 1)}
    assert by_index == {0: "x y", 1: "x y"}
    empty = await _collect(FakeBackend(), _chat(""))
    assert [(c.text, c.finish_reason) for c in empty[:-1]] == [("", "stop")]
    assert empty[-1].usage is not None and empty[-1].usage.completion_tokens == 0


async def test_fail_next_raises_once_for_complete_and_stream() -> None:
    b = FakeBackend()
    b.fail_next(BackendError("boom"))
    with pytest.raises(BackendError, match="boom"):
        await b.complete(_chat("x"))
    assert (await b.complete(_chat("x"))).choices[0].text == "x"
    b.fail_next(BackendError("down"))
    gen = b.stream(_chat("x"))
    with pytest.raises(BackendError, match="down"):
        await anext(gen)
    assert (await _collect(b, _chat("ok")))[0].text == "ok"


async def test_delays() -> None:
    b = FakeBackend(FakeBackendSettings(delay_ms=80))
    t0 = time.perf_counter()
    await b.complete(_chat("a"))
    assert time.perf_counter() - t0 >= 0.075
    t0 = time.perf_counter()
    stamps = [time.perf_counter() - t0 async for _ in b.stream(_chat("a b c"))]
    assert stamps[0] >= 0.075  # the initial delay
    assert stamps[2] - stamps[0] >= 2 * 0.018  # delay_ms / 4 between words


async def test_cancellation_stops_generation() -> None:
    b = FakeBackend(FakeBackendSettings(delay_ms=400))
    task = asyncio.ensure_future(b.complete(_chat("a")))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gen = b.stream(_chat("one two three four"))
    assert (await anext(gen)).text == "one"
    await gen.aclose()
    assert b.cancelled == 2 and b.calls == 2
