"""``CanarySampler`` (watermark_canary): the account's Gumbel mark over a KGW-boosted distribution.

A synthetic language model (next-token logits a fixed random function of the previous token, about
4.5 nats of entropy) is sampled with and without the canary layer. Checked: both marks detect at
once under their own keys; the canary key finds nothing in text sampled without the layer (its
exact null) and another account's canary key finds nothing in canary text; green tokens are
boosted to the rate KGW predicts; the caller's logits are never written.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from antidistill.backends.base import SamplingParams
from antidistill.watermark import Detector, WatermarkSampler, derive_key
from antidistill.watermark.sampler import CanarySampler

VOCAB = 512
MASTER = bytes(range(32))
GUMBEL = derive_key(MASTER, "account", "acct-1", 1, vocab_size=VOCAB)
CANARY = derive_key(MASTER, "account", "acct-1", 1, scheme="kgw", vocab_size=VOCAB)
OTHER_CANARY = derive_key(MASTER, "account", "acct-2", 1, scheme="kgw", vocab_size=VOCAB)
DOCS, LENGTH = 6, 150
ALPHA = 1e-3
PARAMS = SamplingParams(max_tokens=LENGTH, temperature=1.0, seed=3)


def _lm(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.5, size=(VOCAB, VOCAB))


def _generate(make_sampler, lm: np.ndarray, seed: int) -> tuple[list[list[int]], list[list[int]]]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    docs, prompts = [], []
    for _ in range(DOCS):
        prompt = [int(t) for t in rng.integers(0, VOCAB, size=6)]
        sampler = make_sampler()
        ctx = list(prompt)
        for _ in range(LENGTH):
            logits = lm[ctx[-1]]
            before = logits.copy()
            ctx.append(int(sampler.sample(ctx, logits, PARAMS)))
            np.testing.assert_array_equal(logits, before)  # never written in place
        docs.append(ctx[len(prompt) :])
        prompts.append(prompt)
    return docs, prompts


@pytest.fixture(scope="module")
def canary_text() -> tuple[list[list[int]], list[list[int]]]:
    lm = _lm()
    return _generate(lambda: CanarySampler(WatermarkSampler.for_key(GUMBEL), CANARY), lm, seed=1)


@pytest.fixture(scope="module")
def plain_text() -> tuple[list[list[int]], list[list[int]]]:
    lm = _lm()
    return _generate(lambda: WatermarkSampler.for_key(GUMBEL), lm, seed=1)


def test_both_marks_detect_in_canary_text(canary_text: tuple[list[list[int]], list[list[int]]]) -> None:
    docs, prompts = canary_text
    det = Detector()
    gumbel = det.detect(docs, [GUMBEL], prompts)
    kgw = det.detect(docs, [CANARY], prompts)
    print(f"\nlog10 p: gumbel {gumbel.log10_p:.1f}, kgw canary {kgw.log10_p:.1f}")
    # ~900 scored tokens each; either mark alone gives log10 p far below -6 at this entropy
    assert gumbel.log10_p < -6 and kgw.log10_p < -6


def test_canary_keys_are_silent_where_they_were_not_used(
    canary_text: tuple[list[list[int]], list[list[int]]], plain_text: tuple[list[list[int]], list[list[int]]]
) -> None:
    det = Detector()
    plain_docs, plain_prompts = plain_text
    # the exact null: green membership under a key not used for sampling is Binomial(N, gamma); each
    # test below is a single test at ALPHA, so it fails with probability <= 1e-3 under a correct null
    assert det.detect(plain_docs, [CANARY], plain_prompts).p_value > ALPHA
    docs, prompts = canary_text
    assert det.detect(docs, [OTHER_CANARY], prompts).p_value > ALPHA
    # and the Gumbel mark is still there without the layer
    assert det.detect(plain_docs, [GUMBEL], plain_prompts).log10_p < -6


def test_green_tokens_come_out_at_the_rate_kgw_predicts(
    canary_text: tuple[list[list[int]], list[list[int]]],
) -> None:
    scheme = CANARY.build_scheme()
    gamma, delta = scheme.params()["gamma"], scheme.params()["delta"]
    assert isinstance(gamma, float) and isinstance(delta, float)
    docs, _ = canary_text
    scores = np.concatenate([scheme.score(np.array(d), CANARY)[scheme.window :] for d in docs])
    share = float(np.nanmean(scores))
    # boosted share for a flat distribution: gamma e^d / (gamma e^d + 1 - gamma) (0.71 at 0.25, 2.0);
    # a peaked one boosts less. Bound it between gamma + 10 sd of the null and that ceiling + 0.05.
    n = scores.shape[0]
    ceiling = gamma * math.exp(delta) / (gamma * math.exp(delta) + 1 - gamma)
    assert gamma + 10 * math.sqrt(gamma * (1 - gamma) / n) < share < ceiling + 0.05, share


def test_greedy_requests_are_not_boosted() -> None:
    lm = _lm()
    sampler = CanarySampler(WatermarkSampler.for_key(GUMBEL), CANARY)
    greedy = SamplingParams(max_tokens=4, temperature=0.0)
    ctx = [1, 2, 3]
    assert sampler.sample(ctx, lm[3], greedy) == int(np.argmax(lm[3]))


def test_a_gumbel_key_is_refused_as_canary() -> None:
    with pytest.raises(ValueError, match="not kgw"):
        CanarySampler(WatermarkSampler.for_key(GUMBEL), GUMBEL)
