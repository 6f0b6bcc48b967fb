"""LocalBackend with the real SmolLM2-135M-Instruct teacher (slow: run with ``-m model``).

The first run ever converts the GGUF file (~40 s) and caches an HF copy; later runs load in seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest

from antidistill.backends.base import ChatMessage, GenerationRequest, SamplingParams, WatermarkAssignment
from antidistill.backends.local import LocalBackend
from antidistill.backends.model_loading import LoadedModel, load_model
from antidistill.backends.sampling import DefaultSampler
from antidistill.settings import LocalBackendSettings

pytestmark = pytest.mark.model

SETTINGS = LocalBackendSettings(max_batch_size=4)


@pytest.fixture(scope="module")
def teacher() -> LoadedModel:
    return load_model(SETTINGS)


@pytest.fixture
async def backend(teacher: LoadedModel) -> AsyncIterator[LocalBackend]:
    b = LocalBackend(SETTINGS, "smollm2-135m-instruct", model=teacher.model, tokenizer=teacher.tokenizer)
    await b.start()
    yield b
    await b.aclose()


def ask(question: str, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id="it",
        model="smollm2-135m-instruct",
        kind="chat",
        params=SamplingParams(**params),
        messages=(ChatMessage("user", question),),
    )


async def test_greedy_chat_knows_the_capital_of_france(backend: LocalBackend) -> None:
    out = await backend.complete(ask("What is the capital of France?", max_tokens=24, temperature=0.0))
    assert "Paris" in out.choices[0].text
    assert out.usage.prompt_tokens > 10 and 0 < out.usage.completion_tokens <= 24


async def test_stream_equals_complete_with_the_same_seed(backend: LocalBackend) -> None:
    req = ask("Write one sentence about rivers.", max_tokens=24, temperature=0.8, top_p=0.95, seed=11)
    streamed, full = await asyncio.gather(_stream_text(backend, req), backend.complete(req))
    assert streamed == full.choices[0].text and streamed


async def _stream_text(backend: LocalBackend, req: GenerationRequest) -> str:
    return "".join([c.text async for c in backend.stream(req) if c.usage is None])


class _Recording:
    """A watermark-slot sampler that samples like the default one and records the chosen ids."""

    def __init__(self) -> None:
        self.inner = DefaultSampler(seed=3)
        self.chosen: list[int] = []

    def sample(self, context: Sequence[int], logits: np.ndarray, params: SamplingParams) -> int:
        token = self.inner.sample(context, logits, params)
        self.chosen.append(token)
        return token


async def test_streamed_text_equals_decoding_all_tokens_at_once(
    backend: LocalBackend, teacher: LoadedModel
) -> None:
    rec = _Recording()
    req = ask(
        "Say 'good morning' in Japanese, Chinese and Greek, with an emoji.", max_tokens=40, temperature=0.7
    )
    req = dataclasses.replace(req, watermark=WatermarkAssignment(sampler=rec, key_id="k", config_hash="h"))
    pieces = [c.text async for c in backend.stream(req) if c.usage is None]
    expected = teacher.tokenizer.decode(
        rec.chosen, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    assert "".join(pieces) == expected
    # partial multi-byte characters are held back; only a cut at max_tokens may end in U+FFFD
    assert all("\ufffd" not in p for p in pieces[:-1])
