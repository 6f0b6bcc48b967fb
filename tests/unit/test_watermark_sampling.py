"""Sampling: inputs untouched, greedy is argmax, top-p respected, Gumbel distortion-free, paths agree."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest
from scipy import stats

from antidistill.backends.base import SamplingParams
from antidistill.watermark import GumbelScheme, KgwScheme, WatermarkSampler, derive_key
from antidistill.watermark.schemes import prf
from antidistill.watermark.schemes.sampling import Workspace, categorical, next_token_probs
from antidistill.watermark.simulate import SyntheticLM, generate_batch

MASTER = bytes(range(32))
GUMBEL = derive_key(MASTER, "account", "a", 1)
KGW = derive_key(MASTER, "account", "a", 1, scheme="kgw")
LEVEL = 1e-4  # each goodness-of-fit check fails with probability <= 1e-4 if the claim holds


def _states(key_seed: int, n: int, h: int, rng: np.random.Generator) -> prf.U64:
    return prf.chain(np.array(key_seed, dtype=np.uint64), prf.token_mix(rng.integers(0, 10**6, (n, h))))


@pytest.mark.parametrize("key", [GUMBEL, KGW])
def test_sampler_never_modifies_inputs_and_greedy_is_argmax(key: object) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, 500).astype(np.float32)
    logits[7] = -np.inf
    logits.setflags(write=False)  # the local engine hands samplers read-only rows
    context = list(rng.integers(0, 500, 12))
    before_l, before_c = logits.copy(), list(context)
    sampler = WatermarkSampler.for_key(key, rng=np.random.default_rng(2))  # type: ignore[arg-type]
    for temp, top_p in [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5)]:
        tok = sampler.sample(context, logits, SamplingParams(max_tokens=5, temperature=temp, top_p=top_p))
        assert 0 <= tok < 500 and tok != 7
    np.testing.assert_array_equal(logits, before_l)
    assert context == before_c
    greedy = SamplingParams(max_tokens=5, temperature=0.0)
    assert sampler.sample(context, logits, greedy) == int(np.argmax(logits))
    near_zero = SamplingParams(max_tokens=5, temperature=1e-6)  # below the DefaultSampler's greedy threshold
    assert sampler.sample(context, logits, near_zero) == int(np.argmax(logits))


@pytest.mark.parametrize("key", [GUMBEL, KGW])
def test_penalties_match_the_default_sampler(key: object) -> None:
    # a large frequency penalty forbids repeating any generated token; the prompt is not penalized
    logits = np.zeros(40, dtype=np.float32)
    logits[0] = 3.0  # the prompt's token is the favourite until generated once (3 - 2 - 2 < 0)
    sampler = WatermarkSampler.for_key(key, prompt_len=3, rng=np.random.default_rng(0))  # type: ignore[arg-type]
    ctx = [0, 0, 0]
    params = SamplingParams(max_tokens=30, frequency_penalty=2.0, presence_penalty=2.0, temperature=0.05)
    for _ in range(30):
        ctx.append(sampler.sample(ctx, logits, params))
    gen = ctx[3:]
    assert gen[0] == 0 and len(set(gen)) == len(gen)


@pytest.mark.parametrize("key", [GUMBEL, KGW])
def test_top_p_nucleus_is_respected(key: object) -> None:
    rng = np.random.default_rng(3)
    sampler = WatermarkSampler.for_key(key, rng=np.random.default_rng(4))  # type: ignore[arg-type]
    context = list(rng.integers(0, 300, 6))
    params = SamplingParams(max_tokens=1, top_p=0.8)
    for _ in range(300):
        logits = rng.normal(0, 2.5, 300).astype(np.float32)
        p = next_token_probs(logits, 1.0, 1.0)
        order = np.argsort(-p)
        nucleus = set(order[: int(np.searchsorted(np.cumsum(p[order]), 0.8)) + 1].tolist())
        tok = sampler.sample(context, logits, params)
        assert tok in nucleus
        context.append(tok)


def test_gumbel_choice_is_distributed_as_p() -> None:
    # distortion-free: over fresh windows the watermarked choice is an exact draw from p
    p = np.array([0.4, 0.2, 0.15, 0.1, 0.08, 0.05, 0.02, 0.0])
    n = 40_000
    values = prf.vocab_values(_states(GumbelScheme().seed(GUMBEL), n, 4, np.random.default_rng(5)), 8)
    chosen = GumbelScheme().select(np.broadcast_to(p, (n, 8)), values, np.random.default_rng(0))
    counts = np.bincount(chosen, minlength=8)
    assert counts[7] == 0
    assert stats.chisquare(counts[:7], n * p[:7]).pvalue > LEVEL


def test_kgw_boost_matches_theory() -> None:
    rng = np.random.default_rng(6)
    scheme = KgwScheme()
    n, v = 20_000, 64
    probs = next_token_probs(rng.normal(0, 1.5, (n, v)), 1.0, 1.0)
    values = prf.vocab_values(_states(scheme.seed(KGW), n, 2, rng), v)
    green = values < scheme.gamma
    chosen = scheme.select(probs, values, rng)
    boosted = probs * np.where(green, math.e**scheme.delta, 1.0)
    expected = (boosted * green).sum(axis=1) / boosted.sum(axis=1)  # P(chosen is green) per row
    got = green[np.arange(n), chosen]
    # sum of independent Bernoulli(expected_i): 5 standard deviations (two-sided p ~ 6e-7)
    assert abs(got.sum() - expected.sum()) < 5 * math.sqrt((expected * (1 - expected)).sum())


def test_fast_paths_equal_batched_paths() -> None:
    rng = np.random.default_rng(7)
    v = 2000
    gumbel, kgw = GumbelScheme(), KgwScheme()
    ws = Workspace(v, gumbel.seed(GUMBEL))
    for sigma in (0.1, 1.0, 4.0, 12.0):  # near-uniform ... near-deterministic
        for _ in range(25):
            probs = next_token_probs(rng.normal(0, sigma, v), 1.0, 0.95 if sigma > 2 else 1.0)
            values = ws.prf_values(list(rng.integers(0, v, 4))).copy()
            batched = int(gumbel.select(probs[None], values[None], rng)[0])
            assert gumbel.choose(probs, values, rng, ws) == batched
    # the kgw fast path draws from the same distribution as the batched one (same uniforms)
    probs = next_token_probs(rng.normal(0, 2, v), 1.0, 1.0)
    values = ws.prf_values([1, 2]).copy()
    fast = [kgw.choose(probs, values.copy(), np.random.default_rng(i), ws) for i in range(200)]
    batch = [int(kgw.select(probs[None], values[None], np.random.default_rng(i))[0]) for i in range(200)]
    assert sum(a == b for a, b in zip(fast, batch, strict=True)) >= 198  # float rounding at cdf edges only


def test_sampler_matches_batched_generation() -> None:
    # same logits -> the per-sequence sampler and the batched simulator emit the same Gumbel tokens
    rng = np.random.default_rng(8)
    b, length, v = 4, 60, 300
    table = (3.0 * rng.standard_normal((b, length, v))).astype(np.float32)
    prompts = rng.integers(0, v, (b, 6))
    scheme = GumbelScheme()
    batch = generate_batch(
        scheme, GUMBEL, lambda ctx: table[:, ctx.shape[1] - 6], prompts, length, np.random.default_rng(0)
    )
    for row in range(b):
        sampler = WatermarkSampler(scheme, GUMBEL, rng=np.random.default_rng(0))
        ctx = list(prompts[row])
        for t in range(length):
            ctx.append(sampler.sample(ctx, table[row, t], SamplingParams(max_tokens=length)))
        assert ctx[6:] == batch[row].tolist()


class _NoFreshWindows(GumbelScheme):
    fresh_windows_only: ClassVar[bool] = False


def test_repeated_windows_fall_back_to_plain_sampling() -> None:
    # A context-determined LM + deterministic Gumbel choice is a deterministic map on windows: without
    # the fallback the text must end in a cycle; with it, repeated windows get fresh randomness.
    key = derive_key(MASTER, "account", "a", 1, scheme_params={"window": 2})

    def run(scheme: GumbelScheme) -> list[int]:
        lm = SyntheticLM(vocab_size=20, sigma=2.0, context=2, seed=11)
        sampler = WatermarkSampler(scheme, key, rng=np.random.default_rng(9))
        ctx = [1, 2, 3]
        for _ in range(400):
            ctx.append(sampler.sample(ctx, lm(np.array([ctx]))[0], SamplingParams(max_tokens=400)))
        return ctx[3:]

    def period(tail: list[int]) -> int | None:
        return next((q for q in range(1, 101) if tail[q:] == tail[:-q]), None)

    collapsed, fixed = run(_NoFreshWindows(window=2)), run(GumbelScheme(window=2))
    assert period(collapsed[-200:]) is not None  # 20*20 windows: the deterministic walk cycles
    assert period(fixed[-200:]) is None
    assert len({tuple(fixed[i : i + 3]) for i in range(398)}) > 2 * len(
        {tuple(collapsed[i : i + 3]) for i in range(398)}
    )


def test_sampler_bookkeeping() -> None:
    s = WatermarkSampler.for_key(GUMBEL, rng=np.random.default_rng(0))
    logits = np.zeros(50, dtype=np.float32)
    ctx = [1, 2, 3, 4, 5]
    s.sample(ctx, logits, SamplingParams(max_tokens=3))
    assert s._prompt_len == 5  # inferred on the first call
    with pytest.raises(ValueError):
        WatermarkSampler(KgwScheme(), GUMBEL)
    a = s.assignment()
    assert a.key_id == GUMBEL.key_id and a.config_hash == GUMBEL.config_hash and a.sampler is s
    # the request seed makes plain (non-watermark) randomness reproducible
    outs = []
    for _ in range(2):
        k = WatermarkSampler.for_key(KGW)
        ctx2 = [1, 2]
        for _ in range(30):
            ctx2.append(k.sample(ctx2, logits, SamplingParams(max_tokens=30, seed=123)))
        outs.append(ctx2)
    assert outs[0] == outs[1]


def test_n_choices_of_one_request_are_independent_draws() -> None:
    # One sampler serves the n = 4 choices of a request, stepped in choice order as the local engine
    # does. The choices share the prompt, hence the first window: without the request-wide set of used
    # windows all four would take the same deterministic Gumbel choice (equal with probability 1).
    # With it, the 2-token answers of the four choices must be independent draws of p x p: each
    # choice's answers fit p x p and each pair of choices agrees with probability (sum p^2)^2.
    p = np.array([0.35, 0.25, 0.15, 0.12, 0.08, 0.05])
    logits = np.log(p).astype(np.float32)
    logits.setflags(write=False)
    v, n, steps, requests = p.size, 4, 2, 6000
    params = SamplingParams(max_tokens=steps, n=n)
    rng = np.random.default_rng(10)
    answers = np.empty((requests, n), dtype=np.int64)  # each 2-token answer as one id: a * v + b
    for r in range(requests):
        sampler = WatermarkSampler.for_key(GUMBEL, rng=np.random.default_rng(r))
        prompt = [int(t) for t in rng.integers(0, 10**6, 5)]  # fresh prompt windows for every request
        seqs = [list(prompt) for _ in range(n)]
        for _ in range(steps):
            for ctx in seqs:
                ctx.append(sampler.sample(ctx, logits, params))
        answers[r] = [ctx[-2] * v + ctx[-1] for ctx in seqs]
        # keyed (watermarked) steps: the prompt window once, then one per distinct first token (a
        # sibling that drew an earlier choice's first token meets that choice's second window)
        assert sampler.used_windows == 1 + len({ctx[-2] for ctx in seqs})
    pp = np.outer(p, p).ravel()
    for k in range(n):  # 36 cells, smallest expectation 15
        counts = np.bincount(answers[:, k], minlength=v * v)
        assert stats.chisquare(counts, requests * pp).pvalue > LEVEL, k
    agree = float((pp**2).sum())  # P(two independent 2-token answers are equal) = 0.0533
    lo, hi = stats.binom.ppf(LEVEL / 2, requests, agree), stats.binom.isf(LEVEL / 2, requests, agree)
    for a in range(n):
        for b in range(a + 1, n):
            assert lo <= int((answers[:, a] == answers[:, b]).sum()) <= hi, (a, b)


def test_bad_logits_are_rejected() -> None:
    s = WatermarkSampler.for_key(GUMBEL, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        s.sample([1, 2, 3, 4], np.full(10, np.nan, dtype=np.float32), SamplingParams(max_tokens=1))
    with pytest.raises(ValueError):
        next_token_probs(np.zeros(3), 1.0, 0.0)
    assert categorical(np.array([[0.0, 0.0, 1.0]]), np.random.default_rng(0))[0] == 2
