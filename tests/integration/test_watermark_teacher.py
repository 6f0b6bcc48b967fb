"""Watermark power and calibration on the real embedded teacher (SmolLM2-135M-Instruct).

Issue requirement: "Power, measured on the embedded SmolLM2 teacher: TPR >= 0.95 at p <= 1e-3 for
responses of >= 100 new tokens for the canary scheme", and "generation with and without watermark
produces valid text of the same length distribution".

Everything is generated once per module through ``LocalBackend`` (continuous batching, the production
sampling path; one torch thread) and re-tokenized from the response text, as an auditor would; the
chat-templated prompt ids are given to the detector. About 7k generated tokens in all (32 + 16
long answers of <= 104 tokens, 3 x 16 short ones of <= 96): 104-119 s for the whole module on
2026-11-29 (2 shared cores, load average 1.4-5: ~70 tok/s at batch 16 on one torch thread, model
load 5 s from the cache); expect longer when other jobs hold both cores.
The canary key is ``derive_key(..., scheme="kgw")`` with the scheme's defaults
(``KgwScheme``: window 2, gamma 0.25, delta 2.0).

What the tests can and cannot show (K = 32 responses): a finite sample cannot *prove* TPR >= 0.95;
even 32/32 detected only gives a one-sided 95% Clopper-Pearson lower bound of 0.05 ** (1/32) = 0.911.
The power test is therefore a consistency test that fails when the data reject TPR >= 0.95 (at
level <= 0.5%), plus a margin check on the p-values; benchmarks/watermark_teacher.py measures the
rate with more responses and longer texts.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from benchmarks.watermark_teacher import PROMPTS, Job, Result, retokenize, run_jobs
from scipy import stats

from antidistill.backends.model_loading import LoadedModel, load_model
from antidistill.settings import LocalBackendSettings
from antidistill.watermark import Detector, WatermarkKey, derive_key
from antidistill.watermark.keystore import tokenizer_fingerprint

pytestmark = pytest.mark.model

SETTINGS = LocalBackendSettings(max_batch_size=16, torch_threads=1)
MASTER = b"teacher-integration-master-secret"
ALPHA = 1e-3
K = 32  # long-answer canary responses (power, false attribution)
K_PLAIN = 16  # unwatermarked responses to the first K_PLAIN of the same prompts (false positives)
NEW_TOKENS = 100  # the "responses of >= 100 new tokens": each response is cut to its first 100
MAX_TOKENS = 104  # a little headroom: re-tokenizing the text can merge a few generated tokens
N_OTHER_KEYS = 200
K_LEN = 16  # short-answer responses per condition for the length distribution
LEN_MAX_TOKENS = 96  # most short answers end at EOS well before this (median 33-46 tokens, ~1 in 8 capped)
CAP_RATE = 0.125  # measured share of short answers that reach LEN_MAX_TOKENS (6 of 48 on 2026-11-29)
SHORT_RATE = 1 / 48  # measured share of long answers under NEW_TOKENS after re-tokenizing (1 of 48)

SHORT_PROMPTS = (
    "In one or two sentences, what is a rainbow?",
    "Briefly, why do leaves change color in autumn?",
    "In a sentence, what does a librarian do?",
    "Give a short definition of gravity.",
    "In one sentence, what is the capital of Italy known for?",
    "Briefly explain what a verb is.",
    "What is a volcano? Answer in two sentences.",
    "In one sentence, why do we need sleep?",
    "Briefly, what is the difference between a lake and a sea?",
    "Name one benefit of exercise, in a sentence.",
    "In two sentences, what is a computer virus?",
    "Briefly, what does a thermometer measure?",
    "In one sentence, what is a haiku?",
    "In one sentence, what do bees make?",
    "Give a one-sentence description of the moon.",
    "Briefly, why is the ocean salty?",
)
assert len(SHORT_PROMPTS) == K_LEN and len(PROMPTS) >= K


def _key(ident: str, scheme: str, tok_id: str, vocab: int) -> WatermarkKey:
    return derive_key(MASTER, "account", ident, 1, scheme=scheme, tokenizer=tok_id, vocab_size=vocab)


@pytest.fixture(scope="module")
def teacher() -> LoadedModel:
    return load_model(SETTINGS)


@pytest.fixture(scope="module")
def keys(teacher: LoadedModel) -> dict[str, WatermarkKey]:
    tok_id = tokenizer_fingerprint(teacher.tokenizer)
    vocab = int(teacher.model.config.vocab_size)
    return {
        "canary": _key("acct-canary", "kgw", tok_id, vocab),  # KgwScheme defaults: the canary
        "gumbel": _key("acct-default", "gumbel", tok_id, vocab),  # the default scheme on all traffic
        "other": _key("acct-someone-else", "kgw", tok_id, vocab),
        **{f"other-{i}": _key(f"acct-other-{i}", "kgw", tok_id, vocab) for i in range(N_OTHER_KEYS)},
    }


async def _generate(teacher: LoadedModel, jobs: Sequence[Job]) -> list[Result]:
    from antidistill.backends.local import LocalBackend

    backend = LocalBackend(
        SETTINGS, "teacher", model=teacher.model, tokenizer=teacher.tokenizer, max_pending=len(jobs) + 8
    )
    await backend.start()
    try:
        return await run_jobs(backend, jobs)
    finally:
        await backend.aclose()


@pytest.fixture(scope="module")
def runs(teacher: LoadedModel, keys: dict[str, WatermarkKey]) -> dict[str, list[Result]]:
    """All generations at once (full batches): power and length sets, watermarked and plain."""

    canary, gumbel = keys["canary"], keys["gumbel"]
    plan: list[tuple[str, Job]] = []
    for i in range(K):
        plan.append(("canary", Job(PROMPTS[i], canary, 1.0, MAX_TOKENS, seed=1000 + i)))
        if i < K_PLAIN:
            plan.append(("plain", Job(PROMPTS[i], None, 1.0, MAX_TOKENS, seed=2000 + i)))
    for i, prompt in enumerate(SHORT_PROMPTS):
        plan.append(("len-plain", Job(prompt, None, 1.0, LEN_MAX_TOKENS, seed=3000 + i)))
        plan.append(("len-canary", Job(prompt, canary, 1.0, LEN_MAX_TOKENS, seed=4000 + i)))
        plan.append(("len-gumbel", Job(prompt, gumbel, 1.0, LEN_MAX_TOKENS, seed=5000 + i)))
    results = asyncio.run(_generate(teacher, [job for _, job in plan]))
    retokenize(teacher.tokenizer, results)
    out: dict[str, list[Result]] = {}
    for (name, _), r in zip(plan, results, strict=True):
        out.setdefault(name, []).append(r)
    return out


def _first_tokens(results: Sequence[Result]) -> tuple[list[list[int]], list[list[int]], int]:
    """(responses cut to their first NEW_TOKENS tokens, their prompts, how many were too short)."""
    docs = [(r.ids[:NEW_TOKENS], r.prompt_ids) for r in results if len(r.ids) >= NEW_TOKENS]
    return [d for d, _ in docs], [p for _, p in docs], len(results) - len(docs)


def _per_doc_log10_p(docs: list[list[int]], prompts: list[list[int]], key: WatermarkKey) -> np.ndarray:
    d = Detector().detect(docs, [key], prompts, pool=False)  # one key: no Bonferroni factor per doc
    return np.array([r.log10_p for r in d.documents])


def _max_false_positives(n: int, alpha: float = ALPHA, level: float = 1e-3) -> int:
    """Largest count c with P(Binomial(n, alpha) > c) <= level: more than c false positives among n
    honest tests would happen with probability <= ``level``. For n = 32, alpha = 1e-3:
    P(X >= 1) = 0.031, P(X >= 2) = 4.9e-4, so c = 1; for n = 16: P(X >= 1) = 0.016,
    P(X >= 2) = 1.2e-4, so c = 1 too (and for every n from 13 to 32)."""
    return int(stats.binom.isf(level, n, alpha))


def test_canary_power_on_100_new_tokens(runs: dict[str, list[Result]], keys: dict[str, WatermarkKey]) -> None:
    docs, prompts, too_short = _first_tokens(runs["canary"])
    # Long-answer prompts at max_tokens 104: a response that stopped before 100 tokens is dropped (it
    # is not a ">= 100 new tokens" response). Set-up check: at SHORT_RATE, more than 4 of 32 short
    # happens with probability P(Bin(32, 1/48) > 4) = 4.9e-4; more would mean the set-up is wrong.
    allowed_short = int(stats.binom.isf(1e-3, K, SHORT_RATE))
    assert too_short <= allowed_short, f"{too_short} of {K} responses had fewer than {NEW_TOKENS} tokens"
    n = len(docs)
    lp = _per_doc_log10_p(docs, prompts, keys["canary"])
    detected = int((lp <= math.log10(ALPHA)).sum())
    # One-sided binomial consistency test of H: TPR >= 0.95. Under TPR = 0.95 exactly (the least
    # favourable case), X ~ Binomial(n, 0.95); we fail when X <= c with c the largest count such that
    # P(X <= c) <= 0.005. For n = 32: P(X <= 26) = 0.0046, P(X <= 27) = 0.020, so we need X >= 27
    # (n = 31: X >= 26); a true TPR of 0.85 would fail this test with probability
    # P(Bin(32, .85) <= 26) = 0.35, 0.80 with probability 0.64, 0.75 with probability 0.85.
    c = int(stats.binom.ppf(0.005, n, 0.95))
    if stats.binom.cdf(c, n, 0.95) > 0.005:
        c -= 1
    print(
        f"\ncanary (KgwScheme defaults) on the first {NEW_TOKENS} tokens: {detected}/{n} detected at p <= "
        f"{ALPHA} ({too_short} too short); median log10 p {np.median(lp):.2f}, worst {lp.max():.2f}, "
        f"{int((lp > -6.0).sum())} above -6"
    )
    assert detected > c, f"{detected}/{n} detected at p <= {ALPHA}: rejects TPR >= 0.95 (need > {c})"
    # margin: the typical response is far past the threshold, not hovering at it (median log10 p is
    # about -10 at 100 scored tokens, temperature 1, in benchmarks/results/watermark_teacher.json and
    # -11.2 here). The median exceeds -6 only if half the responses do; 2 of 47 measured responses
    # (0 of 16 there, 2 of 31 here) did, one-sided 95% upper bound 0.128 per response, and
    # P(Bin(32, 0.128) >= 16) = 4e-7.
    assert float(np.median(lp)) <= -6.0, sorted(lp.round(2))


def test_canary_text_does_not_name_another_account(
    runs: dict[str, list[Result]], keys: dict[str, WatermarkKey]
) -> None:
    docs, prompts, _ = _first_tokens(runs["canary"])
    # each response against one other account's key: at most the binomial allowance of false hits
    lp = _per_doc_log10_p(docs, prompts, keys["other"])
    allowed = _max_false_positives(len(docs))
    print(f"\ncanary text vs another account's key: min log10 p {lp.min():.2f} over {len(docs)} responses")
    assert int((lp <= math.log10(ALPHA)).sum()) <= allowed, sorted(lp.round(2))
    # attribution over the true key and 200 others (Bonferroni over all 201): only the true one
    candidates = [keys["canary"]] + [keys[f"other-{i}"] for i in range(N_OTHER_KEYS)]
    found = Detector().attribute(docs, candidates, alpha=ALPHA, prompt_seqs=prompts)
    assert [a.key_id for a in found] == [keys["canary"].key_id]


def test_unwatermarked_responses_are_not_significant(
    runs: dict[str, list[Result]], keys: dict[str, WatermarkKey]
) -> None:
    docs, prompts, _ = _first_tokens(runs["plain"])
    # set-up check as for the canary set: P(Bin(16, 1/48) > 3) = 2.8e-4, so at least 13 of 16 remain
    assert len(docs) >= K_PLAIN - int(stats.binom.isf(1e-3, K_PLAIN, SHORT_RATE))
    allowed = _max_false_positives(len(docs))
    for name in ("canary", "other"):
        lp = _per_doc_log10_p(docs, prompts, keys[name])
        print(f"\nunwatermarked vs the {name} key: min log10 p {lp.min():.2f} over {len(docs)} responses")
        assert int((lp <= math.log10(ALPHA)).sum()) <= allowed, (name, sorted(lp.round(2)))
    # pooled as one suspect corpus and attributed over all 202 kgw keys: nobody is named
    candidates = [keys["canary"], keys["other"]] + [keys[f"other-{i}"] for i in range(N_OTHER_KEYS)]
    assert Detector().attribute(docs, candidates, alpha=ALPHA, prompt_seqs=prompts) == []


def _valid(results: Sequence[Result], tokenizer: Any) -> None:
    for r in results:
        choice = r.completion.choices[0]
        assert choice.text.strip(), "empty response"
        assert "\ufffd" not in choice.text, "broken UTF-8 in the response"
        assert choice.finish_reason in ("stop", "length")
        assert 0 < r.completion.usage.completion_tokens <= r.job.max_tokens
        decoded = tokenizer.decode(r.ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert decoded == choice.text, "the text does not survive a tokenize/decode round trip"


@pytest.mark.parametrize("scheme", ["canary", "gumbel"])
def test_watermark_keeps_text_valid_and_the_length_distribution(
    runs: dict[str, list[Result]], teacher: LoadedModel, scheme: str
) -> None:
    plain, marked = runs["len-plain"], runs[f"len-{scheme}"]
    _valid(plain, teacher.tokenizer)
    _valid(marked, teacher.tokenizer)
    a = np.array([r.completion.usage.completion_tokens for r in plain], dtype=np.float64)
    b = np.array([r.completion.usage.completion_tokens for r in marked], dtype=np.float64)
    # Same prompts, lengths mostly set by EOS (short-answer prompts, median 33-46 tokens, the cap of 96
    # reached by about 1 in 8: ties at the cap only make both tests conservative). Under H0 "same
    # length distribution" we bound two statistics, each at level 2.5e-4 (Bonferroni: 2 statistics x
    # 2 schemes, 1e-3 in all):
    # * two-sample Kolmogorov-Smirnov, exact p-value (conservative with ties): for n = m = 16 it
    #   fails when the empirical CDFs differ by 12/16 = 0.75 or more (D = 11/16 has p = 6.7e-4);
    # * Welch's t-test of the means (t quantile, not normal: with 16 lengths each the variances are
    #   estimated, df ~ 28-30, critical |t| ~ 4.2).
    # With 16 responses each these catch gross changes only (a sampler that suppresses or forces EOS,
    # truncates, or runs to the cap): a shift of the mean of about 1.5 standard deviations of the
    # lengths (4.2 * sqrt(2 / 16)).
    level = 1e-3 / 4
    ks = stats.ks_2samp(a, b, method="exact")
    print(
        f"\nlengths plain {sorted(a.astype(int).tolist())}\n"
        f"lengths {scheme} {sorted(b.astype(int).tolist())}; KS p {ks.pvalue:.3f}"
    )
    assert ks.pvalue >= level, (ks, sorted(a), sorted(b))
    welch = stats.ttest_ind(b, a, equal_var=False)
    print(f"mean lengths plain {a.mean():.1f}, {scheme} {b.mean():.1f}; Welch p {welch.pvalue:.3f}")
    assert welch.pvalue >= level, (a.mean(), b.mean(), welch)
    # Set-up check: the cap is not what ends these responses. With CAP_RATE of the answers capped,
    # more than c of the 32 would happen with probability <= 1e-3: c = 11 (P(Bin(32, 0.125) > 11)
    # = 2.9e-4). A sampler that suppresses EOS runs every answer to the cap.
    n_all = len(plain) + len(marked)
    capped = sum(r.completion.choices[0].finish_reason == "length" for r in (*plain, *marked))
    assert capped <= int(stats.binom.isf(1e-3, n_all, CAP_RATE)), capped
