"""LocalEngine with a tiny random Llama (built from a config) and a byte-level fake tokenizer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from antidistill.backends.base import SamplingParams
from antidistill.backends.local_engine import (
    ChoiceDone,
    LocalEngine,
    RequestDone,
    RequestFailed,
    RequestHandle,
    TextDelta,
)
from antidistill.backends.sampling import DefaultSampler
from antidistill.errors import AntidistillError, BackendError, BackendOverloadedError, InvalidRequestError

BOS, EOS, OFFSET = 1, 2, 3  # ids 3..258 are the bytes 0..255
VOCAB = 260


def tiny_model(attn: str = "sdpa", seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=BOS, eos_token_id=EOS,
        pad_token_id=0, initializer_range=0.5,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.set_attn_implementation(attn)
    assert model.config._attn_implementation == attn
    return model


def encode_bytes(text: str) -> list[int]:
    return [OFFSET + b for b in text.encode()]


def decode_bytes(ids: Sequence[int]) -> str:
    return bytes(i - OFFSET for i in ids if OFFSET <= i < OFFSET + 256).decode("utf-8", errors="replace")


class ByteTokenizer:
    """Just enough of a HF tokenizer for LocalBackend: bytes as tokens, a toy chat template."""

    chat_template = "toy"
    eos_token_id, bos_token_id = EOS, BOS

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": encode_bytes(text)}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True, **_: Any) -> str:
        return decode_bytes(ids)

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool
    ) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"


class Recorder:
    """A TokenSampler that records what it is given; optionally scripted or blocking at one call."""

    def __init__(
        self, script: Sequence[int] | None = None, block_at: int | None = None, fail_at: int | None = None
    ):
        self.inner = DefaultSampler()
        self.script = list(script) if script is not None else None
        self.block_at, self.fail_at = block_at, fail_at
        self.reached, self.release = threading.Event(), threading.Event()
        self.contexts: list[tuple[int, ...]] = []
        self.logits: list[np.ndarray] = []
        self.chosen: list[int] = []

    def sample(self, context: Sequence[int], logits: np.ndarray, params: SamplingParams) -> int:
        n = len(self.chosen)
        if n == self.block_at:
            self.reached.set()
            self.release.wait(10)
        if n == self.fail_at:
            raise RuntimeError("sampler exploded")
        self.contexts.append(tuple(context))
        self.logits.append(logits.copy())
        token = self.script[n] if self.script is not None else self.inner.sample(context, logits, params)
        self.chosen.append(token)
        return token


@dataclass
class Result:
    texts: dict[int, str] = field(default_factory=dict)
    deltas: list[tuple[int, str]] = field(default_factory=list)
    finish: dict[int, str] = field(default_factory=dict)
    usage: tuple[int, int] | None = None
    error: AntidistillError | None = None


async def collect(handle: RequestHandle, timeout: float = 30) -> Result:
    r = Result()
    while True:
        ev = await asyncio.wait_for(handle.events.get(), timeout)
        if isinstance(ev, TextDelta | ChoiceDone):
            r.deltas.append((ev.index, ev.text))
            r.texts[ev.index] = r.texts.get(ev.index, "") + ev.text
            if isinstance(ev, ChoiceDone):
                r.finish[ev.index] = ev.finish_reason
        elif isinstance(ev, RequestDone):
            r.usage = (ev.prompt_tokens, ev.completion_tokens)
            return r
        elif isinstance(ev, RequestFailed):
            r.error = ev.error
            return r


def greedy(max_tokens: int = 12, **kw: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kw)


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_model()


@pytest.fixture
def make_engine(model: Any) -> Any:
    engines: list[LocalEngine] = []

    def make(m: Any = None, eos: Sequence[int] = (), **kw: Any) -> LocalEngine:
        engine = LocalEngine(m if m is not None else model, decode_bytes, eos, **kw)
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        e.close()


def submit(
    engine: LocalEngine, prompt: list[int], params: SamplingParams, sampler: Any = None
) -> RequestHandle:
    return engine.submit(lambda: list(prompt), params, sampler)


PROMPTS = [encode_bytes("hi"), encode_bytes("a longer prompt here"), encode_bytes("mid size"), [BOS, 70, 80]]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
async def test_batched_greedy_equals_solo_and_uncached_reference(make_engine: Any, attn: str) -> None:
    model = tiny_model(attn)
    engine = make_engine(model, max_batch_size=8)
    lengths = [14, 6, 11, 9]  # rows finish at different steps: exercises row removal + column trimming
    solo = []
    for p, n in zip(PROMPTS, lengths, strict=True):
        rec = Recorder()
        assert (await collect(submit(engine, p, greedy(n), rec))).usage == (len(p), n)
        solo.append(rec)
    assert engine.batch_sizes and max(engine.batch_sizes) == 1
    # the cache path agrees with a plain forward pass over the whole context
    with torch.inference_mode():
        for rec in solo:
            for ctx, got in zip(rec.contexts, rec.logits, strict=True):
                ref = model(input_ids=torch.tensor([ctx])).logits[0, -1].numpy()
                np.testing.assert_allclose(got, ref, atol=1e-4)

    # batched: the first request blocks at its 3rd token until the others are queued, so they join
    # a running batch whose cache is longer than theirs (left padding + merge)
    recs = [Recorder(block_at=3), Recorder(), Recorder(), Recorder()]
    first = submit(engine, PROMPTS[0], greedy(lengths[0]), recs[0])
    assert await asyncio.to_thread(recs[0].reached.wait, 10)
    others = [
        submit(engine, p, greedy(n), r) for p, n, r in zip(PROMPTS[1:], lengths[1:], recs[1:], strict=True)
    ]
    recs[0].release.set()
    results = await asyncio.gather(collect(first), *(collect(h) for h in others))
    assert all(r.error is None for r in results)
    assert max(engine.batch_sizes) == 4
    for rec, ref in zip(recs, solo, strict=True):
        assert rec.chosen == ref.chosen
        for got, want in zip(rec.logits, ref.logits, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-4)


async def test_sampler_gets_full_context_and_read_only_logits(make_engine: Any) -> None:
    engine = make_engine()
    rec = Recorder()
    prompt = encode_bytes("context")
    await collect(submit(engine, prompt, greedy(5), rec))
    for i, ctx in enumerate(rec.contexts):
        assert list(ctx) == prompt + rec.chosen[:i]
    assert all(row.shape == (VOCAB,) and row.dtype == np.float32 for row in rec.logits)

    class Scribbler:
        def sample(self, context: Sequence[int], logits: np.ndarray, params: SamplingParams) -> int:
            logits[0] = 1e9  # forbidden: the engine hands out read-only arrays
            return 5

    r = await collect(submit(engine, prompt, greedy(5), Scribbler()))
    assert isinstance(r.error, BackendError)


async def test_concurrent_requests_share_steps_and_respect_max_batch(make_engine: Any) -> None:
    engine = make_engine(max_batch_size=3)
    handles = [submit(engine, p, greedy(10)) for p in PROMPTS]
    results = await asyncio.gather(*(collect(h) for h in handles))
    assert [r.usage for r in results] == [(len(p), 10) for p in PROMPTS]
    assert max(engine.batch_sizes) == 3  # batched, but never above max_batch_size
    assert sum(engine.batch_sizes) == 4 * 10 - 4  # each request's first token comes from its prefill


async def test_cancel_stops_one_sequence_others_continue(make_engine: Any) -> None:
    engine = make_engine()
    victim, other = Recorder(block_at=4), Recorder()
    h_victim = submit(engine, PROMPTS[0], greedy(200), victim)
    h_other = submit(engine, PROMPTS[1], greedy(60), other)
    assert await asyncio.to_thread(victim.reached.wait, 10)
    h_victim.cancel()
    victim.release.set()
    r = await collect(h_other)
    assert r.usage == (len(PROMPTS[1]), 60) and r.finish == {0: "length"}
    assert len(victim.chosen) <= 5  # dropped at the next step boundary
    assert engine.batch_sizes[-1] == 1


async def test_cancel_while_waiting_frees_the_queue(make_engine: Any) -> None:
    engine = make_engine(max_batch_size=1, max_pending=1)
    blocker = Recorder(block_at=1)
    h1 = submit(engine, PROMPTS[0], greedy(3), blocker)
    assert await asyncio.to_thread(blocker.reached.wait, 10)
    h2 = submit(engine, PROMPTS[1], greedy(3))
    with pytest.raises(BackendOverloadedError):
        submit(engine, PROMPTS[2], greedy(3))
    h2.cancel()
    h3 = submit(engine, PROMPTS[2], greedy(3))  # room again
    blocker.release.set()
    assert (await collect(h1)).usage == (len(PROMPTS[0]), 3)
    assert (await collect(h3)).usage == (len(PROMPTS[2]), 3)
    assert h2.events.empty()


async def test_stop_string_is_held_back_and_cut(make_engine: Any) -> None:
    engine = make_engine()
    script = encode_bytes("hello STxy STOP world")
    r = await collect(submit(engine, PROMPTS[0], greedy(50, stop=("STOP", "zzz")), Recorder(script)))
    assert r.texts == {0: "hello STxy "} and r.finish == {0: "stop"}
    assert not any("STOP" in t or t.endswith("ST") for _, t in r.deltas)
    assert r.usage == (len(PROMPTS[0]), len(encode_bytes("hello STxy STOP")))


async def test_multibyte_text_is_never_split(make_engine: Any) -> None:
    engine = make_engine()
    text = "héllo 😀 wörld"
    r = await collect(
        submit(engine, PROMPTS[0], greedy(len(encode_bytes(text))), Recorder(encode_bytes(text)))
    )
    assert r.texts[0] == text and r.finish[0] == "length"
    assert all("\ufffd" not in t for _, t in r.deltas)
    assert (0, "😀") in r.deltas


async def test_eos_and_max_tokens_and_context_limit(make_engine: Any) -> None:
    engine = make_engine(eos=[EOS], max_context_tokens=20)
    r = await collect(submit(engine, PROMPTS[0], greedy(10), Recorder([*encode_bytes("ab"), EOS, 70])))
    assert (r.texts, r.finish, r.usage) == ({0: "ab"}, {0: "stop"}, (2, 3))
    r = await collect(submit(engine, PROMPTS[0], greedy(4), Recorder(encode_bytes("abcdefgh"))))
    assert (r.texts, r.finish, r.usage) == ({0: "abcd"}, {0: "length"}, (2, 4))
    long_prompt = encode_bytes("x" * 15)
    r = await collect(submit(engine, long_prompt, greedy(100), Recorder(encode_bytes("y" * 50))))
    assert r.texts == {0: "yyyyy"} and r.finish == {0: "length"}  # 15 + 5 = the 20-token context
    r = await collect(submit(engine, encode_bytes("x" * 20), greedy(5)))
    assert isinstance(r.error, InvalidRequestError) and r.error.code == "context_length_exceeded"


async def test_n_choices_are_independent_and_usage_sums(make_engine: Any) -> None:
    engine = make_engine()
    params = SamplingParams(max_tokens=8, temperature=1.0, n=3, seed=7)
    r = await collect(submit(engine, PROMPTS[1], params))
    assert sorted(r.texts) == [0, 1, 2] and r.usage == (len(PROMPTS[1]), 24)
    assert len(set(r.texts.values())) > 1  # distinct random streams per choice
    again = await collect(submit(engine, PROMPTS[1], params))
    assert again.texts == r.texts  # same seed, same answers
    solo = await collect(submit(engine, PROMPTS[1], SamplingParams(max_tokens=8, temperature=1.0, seed=7)))
    assert solo.texts[0] == r.texts[0]  # choice 0 does not depend on n


async def test_sampler_crash_fails_only_its_request(make_engine: Any) -> None:
    engine = make_engine()
    bad, good = Recorder(fail_at=3), Recorder()
    results = await asyncio.gather(
        collect(submit(engine, PROMPTS[0], greedy(10), bad)),
        collect(submit(engine, PROMPTS[1], greedy(10), good)),
    )
    assert isinstance(results[0].error, BackendError) and "exploded" not in results[0].error.message
    assert results[1].usage == (len(PROMPTS[1]), 10)


async def test_forward_crash_fails_the_batch_and_engine_keeps_serving(make_engine: Any, model: Any) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.calls, self.forward = 0, model.forward

        def __call__(self, **kw: Any) -> Any:
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("boom")
            return model(**kw)

    engine = make_engine(Flaky())
    r = await collect(submit(engine, PROMPTS[0], greedy(10)))
    assert isinstance(r.error, BackendError)
    assert (await collect(submit(engine, PROMPTS[0], greedy(4)))).usage == (len(PROMPTS[0]), 4)
    r = await collect(submit(engine, [], greedy(4)))
    assert isinstance(r.error, InvalidRequestError)


async def test_close_fails_running_requests_and_rejects_new_ones(make_engine: Any) -> None:
    engine = make_engine()
    rec = Recorder(block_at=2)
    handle = submit(engine, PROMPTS[0], greedy(100), rec)
    assert await asyncio.to_thread(rec.reached.wait, 10)
    closing = asyncio.create_task(engine.aclose())
    await asyncio.sleep(0.05)
    rec.release.set()
    await closing
    r = await collect(handle)
    assert isinstance(r.error, BackendError)
    with pytest.raises(BackendError):
        submit(engine, PROMPTS[0], greedy(3))
