"""n > 1 with the Gumbel watermark on the local engine (tiny random Llama built from a config).

Gumbel-max sampling is deterministic given (key, window, p), and the ``n`` choices of a request share
the prompt: before the request-wide set of used windows (``WatermarkSampler``) they came out
identical. Checked here: the choices differ, each one still detects under the account's key (and not
under another key), and the sampler never writes to the logits or the context it is given.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from antidistill.backends.base import GenerationRequest, SamplingParams
from antidistill.backends.local import LocalBackend
from antidistill.backends.local_engine import LocalEngine, RequestDone, RequestFailed, RequestHandle
from antidistill.settings import LocalBackendSettings
from antidistill.watermark import Detector, WatermarkSampler, derive_key
from tests.unit.test_local_engine import VOCAB, ByteTokenizer, decode_bytes, encode_bytes, tiny_model

MASTER = bytes(range(32))
KEY = derive_key(MASTER, "account", "n-choices", 1, vocab_size=VOCAB)  # gumbel, window 4
OTHER = derive_key(MASTER, "account", "someone-else", 1, vocab_size=VOCAB)
N, LENGTH = 4, 96  # the tiny model's next-token entropy is ~2.7 nats: log10 p ~ -50 per choice here
ALPHA = 1e-3


class Guarded:
    """Wraps a TokenSampler: hands it a writable copy of the logits and a list copy of the context
    and fails if it changed either; records every (context + chosen token) it was asked for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[int, ...]] = []
        self.read_only_logits = True

    def sample(self, context: Sequence[int], logits: np.ndarray, params: SamplingParams) -> int:
        self.read_only_logits &= not logits.flags.writeable
        mine, ctx = np.array(logits, copy=True), list(context)
        token = int(self.inner.sample(ctx, mine, params))
        np.testing.assert_array_equal(mine, logits)  # not modified in place
        assert ctx == list(context)
        self.calls.append((*context, token))
        return token


async def _run(engine: LocalEngine, prompt: list[int], params: SamplingParams, sampler: Any) -> None:
    handle: RequestHandle = engine.submit(lambda: list(prompt), params, sampler)
    while True:
        event = await asyncio.wait_for(handle.events.get(), 60)
        if isinstance(event, RequestFailed):
            raise event.error
        if isinstance(event, RequestDone):
            assert event.completion_tokens == params.n * params.max_tokens
            return


def _choices(guard: Guarded, prompt: list[int]) -> list[list[int]]:
    """The finished sequences, in choice order (the engine steps a request's rows in that order)."""
    return [list(c[len(prompt) :]) for c in guard.calls if len(c) == len(prompt) + LENGTH]


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_model()


@pytest.fixture
def engine(model: Any) -> Any:
    e = LocalEngine(model, decode_bytes, (), max_batch_size=8)  # no eos: every choice runs to LENGTH
    e.start()
    yield e
    e.close()


async def test_n4_gumbel_choices_differ_and_each_detects(engine: LocalEngine) -> None:
    prompt = encode_bytes("<user>tell me a story\n<assistant>")
    params = SamplingParams(max_tokens=LENGTH, temperature=1.0, n=N, seed=11)
    sampler = WatermarkSampler.for_key(KEY)
    guard = Guarded(sampler)
    await _run(engine, prompt, params, guard)
    assert guard.read_only_logits  # and the engine's own rows stay read-only
    choices = _choices(guard, prompt)
    assert len(choices) == N
    # all four differ, from the first tokens on: choice 0 takes the keyed token on the prompt's last
    # window, the siblings draw plainly there (the window is used) and diverge
    assert len({tuple(c) for c in choices}) == N
    assert len({tuple(c[:8]) for c in choices}) == N
    for a in range(N):
        for b in range(a + 1, N):
            assert sum(x == y for x, y in zip(choices[a], choices[b], strict=True)) < LENGTH // 4
    # nearly every step was keyed: only windows another choice (or the same one) already used are plain
    assert sampler.used_windows >= N * LENGTH - 2 * N
    # each choice, tested on its own under the account's key (dedup, prompt windows excluded)
    detector = Detector()
    mine = detector.detect(choices, [KEY], [prompt] * N, pool=False)
    theirs = detector.detect(choices, [OTHER], [prompt] * N, pool=False)
    print("\nlog10 p per choice:", [round(d.log10_p, 1) for d in mine.documents], "keyed steps:",
          sampler.used_windows, "of", N * LENGTH)  # fmt: skip
    for doc in mine.documents:  # significant at ALPHA even after Bonferroni over the 4 choices
        assert doc.n_scored >= LENGTH - 8 and doc.log10_p <= math.log10(ALPHA / N), doc
    # another account's key names none of them (each is a test at ALPHA: 4 tests, at most 1 false hit
    # with probability 1 - 6e-6)
    assert sum(doc.log10_p <= math.log10(ALPHA) for doc in theirs.documents) <= 1


async def test_separate_requests_repeat_themselves(engine: LocalEngine) -> None:
    # What n > 1 used to do, shown with n = 1 requests (each with its own sampler, as the gateway
    # makes one per request): the same prompt and key give the same watermarked answer, whatever the
    # seed of the plain randomness. This is why the choices of one request must share used windows.
    prompt = encode_bytes("<user>again\n<assistant>")
    answers = []
    for seed in (1, 2, 3):
        guard = Guarded(WatermarkSampler.for_key(KEY))
        await _run(engine, prompt, SamplingParams(max_tokens=LENGTH, temperature=1.0, seed=seed), guard)
        answers.append(tuple(_choices(guard, prompt)[0][:24]))
    assert len(set(answers)) == 1


async def test_backend_n_path_with_a_watermark_assignment(model: Any) -> None:
    # the gateway's path: one WatermarkSampler per request, handed over as its WatermarkAssignment
    backend = LocalBackend(
        LocalBackendSettings(max_batch_size=4, max_context_tokens=256), "tiny", model=model,
        tokenizer=ByteTokenizer(),
    )  # fmt: skip
    await backend.start()
    try:
        req = GenerationRequest(
            "r", "tiny", "completion", SamplingParams(max_tokens=24, temperature=1.0, n=3, seed=5),
            prompt="once upon a time", watermark=WatermarkSampler.for_key(KEY).assignment(),
        )  # fmt: skip
        out = await backend.complete(req)
    finally:
        await backend.aclose()
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert len({c.text for c in out.choices}) == 3
    assert out.watermark_key_id == KEY.key_id and out.watermark_config_hash == KEY.config_hash
