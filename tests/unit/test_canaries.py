"""Canaries: the pool and account subsets (watermark/canaries.py) and the exact recall test
(forensics/canary.py). No I/O, no model."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from antidistill.forensics.canary import (
    ServedCanaries,
    canary_questions,
    canary_recall_test,
    hypergeom_log_sf,
    poisson_binomial_log_sf,
    score_answers,
)
from antidistill.watermark.canaries import (
    CanaryBook,
    canary_suffix,
    candidates_in,
    completion_candidates,
    prompt_key,
)

SECRET = bytes(range(32))


def test_pool_is_deterministic_secret_dependent_and_well_formed() -> None:
    a, b = CanaryBook(SECRET, 300, 4), CanaryBook(SECRET, 300, 4)
    assert [(c.cue, c.completion, c.template) for c in a.pool()] == [
        (c.cue, c.completion, c.template) for c in b.pool()
    ]
    assert a.pool_id == b.pool_id and a.pool_id.startswith("cp_")
    other = CanaryBook(b"another master secret, 32 bytes!", 300, 4)
    assert other.pool_id != a.pool_id
    same = sum(x.completion == y.completion for x, y in zip(a.pool(), other.pool(), strict=True))
    assert same <= 3  # 300 independent draws among ~8,000 names
    # a bigger pool starts with the same items (indices are stable when the pool grows)
    assert [c.cue for c in CanaryBook(SECRET, 600).pool()[:300]] == [c.cue for c in a.pool()]
    cues = [c.cue for c in a.pool()]
    assert len(set(cues)) == len(cues)
    for c in a.pool()[:50]:
        s = c.sentence("Side note: ")
        assert s.startswith("Side note: the ") and c.cue in s and c.completion in s and len(s) < 110
        assert c.recalled_in(s) and not c.recalled_in(c.prefix)
        for q in c.questions(4):  # the audit never says the completion
            assert c.completion.lower() not in q.lower() and c.cue in q
        assert c.completion not in repr(c)  # secret stays out of logs
    assert len(completion_candidates()) > 7000


def test_completions_are_uniform_over_the_candidates() -> None:
    """Chi-square on 4,000 completions bucketed by candidate index (32 buckets)."""
    book = CanaryBook(SECRET, 4000, 1)
    index = {c: i for i, c in enumerate(completion_candidates())}
    m = len(index)
    buckets = Counter(index[c.completion] * 32 // m for c in book.pool())
    _, p = stats.chisquare([buckets[b] for b in range(32)])
    assert p > 1e-4


def test_account_subsets_are_secret_distinct_and_independent() -> None:
    book = CanaryBook(SECRET, 256, 8)
    subsets = {f"acct_{i}": book.subset(f"acct_{i}") for i in range(400)}
    for s in subsets.values():
        assert len(s) == 8 and len(set(s)) == 8 and all(0 <= i < 256 for i in s)
    assert book.subset("acct_3") == subsets["acct_3"] == CanaryBook(SECRET, 256, 8).subset("acct_3")
    # another deployment's secret gives the same account another subset
    other = CanaryBook(b"another master secret, 32 bytes!", 256, 8)
    assert sum(len(set(other.subset(a)) & set(s)) for a, s in subsets.items()) < 400 * 8 * 8 / 256 * 2
    # pairwise overlaps look like independent draws: mean |A & B| = k^2 / N = 0.25
    overlaps = [
        len(set(subsets[a]) & set(subsets[b])) for a, b in itertools.combinations(list(subsets)[:80], 2)
    ]
    assert abs(np.mean(overlaps) - 0.25) < 0.06
    # every pool item is used about equally often (3,200 picks over 256 items)
    counts = Counter(i for s in subsets.values() for i in s)
    _, p = stats.chisquare([counts[i] for i in range(256)])
    assert p > 1e-4


def test_serving_is_deterministic_per_account_and_prompt_at_the_configured_rate() -> None:
    book = CanaryBook(SECRET, 256, 4)
    prompts = [f"question number {i}" for i in range(3000)]
    picks = [book.choose("acct_a", p, 0.2) for p in prompts]
    served = [c for c in picks if c is not None]
    # binomial(3000, 0.2): sd = 21.9; 4.5 sd
    assert abs(len(served) - 600) < 100
    assert {c.canary.index for c in served} == set(book.subset("acct_a"))
    assert {c.lead for c in served} == {"Side note: ", "Fun fact: ", "By the way, ", "Incidentally, "}
    again = [book.choose("acct_a", p, 0.2) for p in prompts]
    assert [None if c is None else (c.canary.index, c.lead) for c in again] == [
        None if c is None else (c.canary.index, c.lead) for c in picks
    ]
    assert all(book.choose("acct_a", p, 0.0) is None for p in prompts[:50])
    assert all(book.choose("acct_a", p, 1.0) is not None for p in prompts[:50])
    rec = served[0].record()
    assert rec == {"id": served[0].canary.index, "pool": book.pool_id}  # no text in the event
    assert prompt_key([("user", "hi")]) != prompt_key([("system", "hi")]) != prompt_key([], "hi")


def test_insertion_and_matching() -> None:
    assert canary_suffix(True, "Fun fact: x.") == "\n\nFun fact: x."
    assert canary_suffix(False, "Fun fact: x.") == "Fun fact: x."
    c = CanaryBook(SECRET, 10).canary(3)
    name = c.completion
    assert c.recalled_in(f"It lives near {name.upper()}!")
    accented = name[0] + "\u0301" + name[1:]  # a combining accent is ignored
    assert c.recalled_in(f"near {accented}.")
    assert not c.recalled_in(f"near {name}x") and not c.recalled_in(name[:-1])
    assert candidates_in(f"{name} and Orvanthe, Orvanthe") == {name.casefold(), "orvanthe"}


# exact tails -------------------------------------------------------------------------------------
def _brute_force_sf(probs: list[float], x: int) -> float:
    total = 0.0
    for bits in itertools.product((0, 1), repeat=len(probs)):
        if sum(bits) >= x:
            total += math.prod(p if b else 1 - p for p, b in zip(probs, bits, strict=True))
    return total


def test_poisson_binomial_tail_is_exact() -> None:
    rng = random.Random(3)
    for _ in range(30):
        probs = [rng.choice((0.0, rng.random() * 0.3, rng.random())) for _ in range(rng.randint(1, 10))]
        for x in range(len(probs) + 2):
            got = math.exp(poisson_binomial_log_sf(probs, x))
            assert got == pytest.approx(_brute_force_sf(probs, x), rel=1e-9, abs=1e-300)
    # equal probabilities: the binomial tail, also far below float range (log space)
    for n, p, x in ((50, 0.01, 3), (200, 1e-4, 5), (400, 1.0 / 8064, 60)):
        want = stats.binom.logsf(x - 1, n, p)
        assert poisson_binomial_log_sf([p] * n, x) == pytest.approx(want, rel=1e-9)
    assert poisson_binomial_log_sf([1.0 / 8064] * 400, 200) / math.log(10) < -500


def test_hypergeometric_tail_matches_scipy_and_the_formula() -> None:
    for pop, k, draws, x in ((256, 5, 40, 3), (1024, 12, 64, 12), (30, 10, 12, 0), (50, 3, 10, 2)):
        got = math.exp(hypergeom_log_sf(x, pop, k, draws))
        assert got == pytest.approx(float(stats.hypergeom.sf(x - 1, pop, k, draws)), rel=1e-9)
        formula = sum(
            math.comb(k, j) * math.comb(pop - k, draws - j) for j in range(x, min(k, draws) + 1)
        ) / math.comb(pop, draws)
        assert got == pytest.approx(formula, rel=1e-9)


# the recall test ---------------------------------------------------------------------------------
def _served(book: CanaryBook, accounts: dict[str, list[int]]) -> ServedCanaries:
    return ServedCanaries(book.pool_id, {a: frozenset(s) for a, s in accounts.items()}, 10)


def _null_answer(rng: random.Random, cands: tuple[str, ...]) -> str:
    """What a model that never saw the canaries might say: any number of invented names (0-300 of
    ~8,000 candidates), chosen without knowing the secret completions."""
    names = rng.sample(cands, rng.randint(0, 300))
    return "I am not sure. Perhaps " + ", ".join(names) + "."


def test_recall_p_values_are_valid_under_the_null() -> None:
    """Fresh secret per run (the completions are what is random under H0); 1,500 runs, 20 canaries
    each, answers chosen without the secret. A discrete exact test has P(p <= a) <= a; the bound
    allows 3 binomial standard deviations over a (+1 for the discreteness of the count)."""
    rng = random.Random(11)
    cands = completion_candidates()
    runs = 1500
    ps = []
    for r in range(runs):
        book = CanaryBook(f"secret for run {r:06d} of the null test".encode(), 64, 4)
        served = _served(book, {"a": list(range(20))})
        answers = {i: [_null_answer(rng, cands)] for i in range(20)}
        out = canary_recall_test(served, book, answers)
        ps.append(out.result.p_value)
    ps_arr = np.array(ps)
    for alpha in (0.01, 0.05, 0.2, 0.5):
        bound = alpha * runs + 3 * math.sqrt(alpha * (1 - alpha) * runs) + 1
        assert np.sum(ps_arr <= alpha) <= bound, (alpha, int(np.sum(ps_arr <= alpha)))
    assert np.mean([p < 1 for p in ps]) > 0.2  # the simulated null is not degenerate (hits do happen)


def test_a_memorizing_suspect_is_caught_and_its_accounts_named() -> None:
    book = CanaryBook(SECRET, 1024, 4)
    accounts = {f"acct_{i}": list(book.subset(f"acct_{i}")) for i in range(40)}
    harvesters = ("acct_7", "acct_21")
    served = _served(book, accounts)
    answers: dict[int, list[str]] = {}
    for i in served.indices:
        c = book.canary(i)
        knows = any(i in accounts[h] for h in harvesters)
        answers[i] = [f"{c.sentence()} It is lovely." if knows else f"I do not know the {c.cue}."]
    unserved = [i for i in range(1024) if i not in set(served.indices)][:16]
    out = canary_recall_test(served, book, answers, {i: ["No idea."] for i in unserved})
    r = out.result
    assert not r.inconclusive and r.data["recalled"] == len(
        set(accounts["acct_7"]) | set(accounts["acct_21"])
    )
    assert r.log10_p < -20
    ctrl = r.data["unserved_control"]
    assert ctrl["asked"] == 16 and ctrl["recalled"] == 0
    # the cross-check's power is that of 16 controls: P(all x recalls among the n served) = C(n,x)/C(n+16,x)
    n, x = r.data["asked"], r.data["recalled"]
    want = math.log10(math.comb(n, x) / math.comb(n + 16, x))
    assert ctrl["hypergeometric_log10_p"] == pytest.approx(want, rel=1e-9)
    named = {a["account_id"] for a in out.accounts}
    assert set(harvesters) <= named
    # only accounts sharing a recalled canary with a harvester can be named too
    for a in named - set(harvesters):
        assert set(accounts[a]) & (set(accounts["acct_7"]) | set(accounts["acct_21"]))
    assert out.accounts[0]["account_id"] in harvesters

    # a suspect that recalls nothing: inconclusive, p = 1; nothing served: inconclusive
    none = canary_recall_test(served, book, {i: ["no idea"] for i in served.indices})
    assert none.result.inconclusive and none.result.p_value == 1.0 and not none.accounts
    empty = canary_recall_test(ServedCanaries(book.pool_id, {}, 0), book, {})
    assert empty.result.inconclusive and "no canary was served" in empty.result.detail


def test_questions_are_phrasing_major_and_scoring_counts_candidates() -> None:
    book = CanaryBook(SECRET, 64, 4)
    qs = canary_questions(book, [3, 5, 9], 2)
    assert [i for i, _ in qs] == [3, 5, 9, 3, 5, 9]
    c = book.canary(5)
    ev = score_answers(book, {5: [f"Maybe {c.completion} or Orvanthe or Thalithwick", ""], 6: [""]})
    assert len(ev) == 1 and ev[0].recalled and ev[0].answers == 1
    assert ev[0].candidates == len({c.completion.lower(), "orvanthe", "thalithwick"})
    assert ev[0].p_null == ev[0].candidates / book.n_candidates
