"""Reading mode (open-weights radioactivity): the null holds against a model that reads marked text,
including one that copies its context; power against a model trained to prefer green tokens.

Texts are generated here with the real schemes (numpy, batched) from a synthetic "teacher": a fixed
random bigram distribution over a small vocabulary, peaked enough that windows repeat inside a text
(which is exactly when a context-copying reader could fake a signal). Suspects are deterministic
functions of the context, as top-1 predictions are:

* ``teacher``: the teacher's own most likely next token (an untouched model);
* ``random``: the argmax of a random bigram table (an unrelated model);
* ``copier``: if the current window occurred earlier in the text, the token that followed it there
  (an induction head), else the teacher's mode. The adversarial null.

Statistics (fixed seeds; every bound is derived, none tuned): with R independent runs, each giving the
marking key's unadjusted p-value, the number of p-values <= a is Binomial(R, <= a) under a valid
(possibly conservative, e.g. the discrete KGW test) null; we assert it stays <= the binomial
1e-4 upper quantile for a in {0.01, 0.05, 0.2}; for the continuous Gumbel test also a KS test at 1e-4.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from antidistill.forensics.reading import ReadingDoc, reading_test, reading_tuples, score_keys
from antidistill.watermark.keys import derive_key
from antidistill.watermark.schemes import build_scheme, prf

V = 48
R = 120  # runs per configuration (a fresh key and fresh texts each)
N_DOCS, LEN, PROMPT = 12, 48, 4
LEVEL = 1e-4


@functools.cache
def _teacher(seed: int) -> np.ndarray:
    """(V, V) next-token distributions: peaked (about 4-6 likely successors per token)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.2, size=(V, V))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


@functools.cache
def _generate(scheme_name: str, window: int, key_seed: int, n_docs: int = N_DOCS) -> tuple[Any, list[Any]]:
    """Marked texts (batched, numpy): prompts of PROMPT random tokens, then LEN marked tokens."""
    key = derive_key(
        b"reading-test-master-secret-0123" + key_seed.to_bytes(4, "big"),
        "account",
        "acct",
        1,
        scheme=scheme_name,
        scheme_params={"window": window},
        tokenizer="synthetic",
        vocab_size=V,
    )
    scheme = build_scheme(scheme_name, {"window": window})
    seed = scheme.seed(key)
    rng = np.random.default_rng(key_seed)
    teacher = _teacher(1)
    seqs = rng.integers(0, V, size=(n_docs, PROMPT)).tolist()
    for _ in range(LEN):
        probs = teacher[[s[-1] for s in seqs]]
        states = np.array([prf.window_state(seed, s[-window:]) for s in seqs], dtype=np.uint64)
        values = prf.vocab_values(states, V)
        chosen = scheme.select(probs, values, rng)
        for s, c in zip(seqs, chosen.tolist(), strict=True):
            s.append(int(c))
    return key, [(s[:PROMPT], s[PROMPT:]) for s in seqs]


def _predict(kind: str, prompt: list[int], text: list[int], teacher: np.ndarray, window: int) -> list[int]:
    seq = prompt + text
    mode = teacher.argmax(axis=1)
    rand = np.random.default_rng(99).normal(size=(V, V)).argmax(axis=1)
    out = []
    for t in range(len(prompt), len(seq)):
        guess = int(mode[seq[t - 1]])
        if kind == "random":
            guess = int(rand[seq[t - 1]])
        elif kind == "copier" and t >= window:
            w = seq[t - window : t]
            for j in range(t - 1, window - 1, -1):  # the latest earlier occurrence of this window
                if seq[j - window : j] == w:
                    guess = seq[j]
                    break
        out.append(guess)
    return out


def _p_values(scheme_name: str, window: int, kind: str, filter: str) -> np.ndarray:
    teacher = _teacher(1)
    out = []
    for r in range(R):
        key, docs = _generate(scheme_name, window, r)
        rdocs = [
            ReadingDoc(tuple(p), tuple(t), tuple(_predict(kind, p, t, teacher, window))) for p, t in docs
        ]
        [s], _ = score_keys(rdocs, [key], filter=filter)  # type: ignore[arg-type]
        out.append(10.0**s.log10_p)
    return np.array(out)


def _assert_valid_null(p: np.ndarray, continuous: bool) -> None:
    for a in (0.01, 0.05, 0.2):
        bound = int(stats.binom.isf(LEVEL, len(p), a))
        assert int((p <= a).sum()) <= bound, (a, int((p <= a).sum()), bound, np.sort(p)[:10])
    if continuous:
        assert stats.kstest(p, "uniform").pvalue > LEVEL, np.sort(p)[:10]


@pytest.mark.parametrize(
    ("scheme_name", "window", "filter"),
    [("gumbel", 2, "window"), ("gumbel", 2, "tuple"), ("kgw", 2, "window"), ("kgw", 2, "tuple")],
)
@pytest.mark.parametrize("kind", ["teacher", "random", "copier"])
def test_null_is_valid_for_readers_that_never_trained_on_the_key(
    scheme_name: str, window: int, filter: str, kind: str
) -> None:
    p = _p_values(scheme_name, window, kind, filter)
    _assert_valid_null(p, continuous=scheme_name == "gumbel")


def test_without_the_context_rule_a_copier_fakes_the_signal() -> None:
    """Why the own-context rule exists: scoring every position (tuple dedup only, the published rule
    alone) lets a pure context copier look radioactive on peaked text. Under a valid null
    at most Binomial(R, 0.01)'s 1e-4 quantile (6 of 120) would be <= 0.01."""
    p = _p_values("gumbel", 2, "copier", "dedup-only")
    assert int((p <= 0.01).sum()) > int(stats.binom.isf(LEVEL, R, 0.01)), np.sort(p)[:10]


def test_tuples_skip_prompt_windows_repeats_and_shared_windows() -> None:
    # window 2; doc 0 repeats the window (1, 2) and shares (7, 8) with doc 1; (5, 6) is in doc 1's prompt
    docs = [
        ReadingDoc((9, 9), (1, 2, 3, 1, 2, 4, 7, 8, 0), (5, 5, 5, 5, 5, 5, 5, 5, 5)),
        ReadingDoc((5, 6), (7, 8, 1, 5, 6, 2), (4, 4, 4, 4, 4, 4)),
    ]
    rt = reading_tuples(docs, 2, filter="window")
    ts = rt.tuples
    windows = {tuple(ts.mix[s : s + 2].tolist()) for s in ts.starts.tolist()}
    mix = {tuple(prf.token_mix(np.array(w)).tolist()): w for w in [(2, 3), (3, 1), (2, 4), (4, 7), (8, 1)]}
    # doc 0 windows: (9,9) (9,1) (1,2) (2,3) (3,1) (1,2)again (2,4) (4,7) (7,8)shared
    # (9,9) is a prompt window; (9,1) is fine; second (1,2) is a repeat; (7,8) occurs in doc 1 too
    assert rt.n_context_excluded >= 1 and rt.n_shared_excluded >= 1 and rt.n_prompt_excluded >= 1
    kept = {mix.get(w, w) for w in windows}
    assert (7, 8) not in kept and (5, 6) not in kept and (9, 9) not in kept
    assert ts.n_scored == len(ts.starts) == len(ts.doc)


def test_power_against_a_model_trained_to_prefer_green_tokens() -> None:
    """A bigram model (a V x V logit table, the smallest trainable LM) trained by gradient descent on
    KGW-marked text (window 1, gamma 0.25, delta 2) from a uniform teacher, then reading held-out
    marked texts it never saw. It learns each token's green list, so its argmax is green far more
    often than gamma. Derived bound: with the tuple rule its predictions give at most V distinct
    (window, prediction) tuples; we require >= 40 scored and p <= 1e-6 after Bonferroni over 1,000 keys:
    at 40 tuples that needs >= 26 green (P(Bin(40, .25) >= 26) = 4e-10 x 1000 keys), far below what
    a model that learned the lists gives (expected green rate ~ the green mass e^2/(e^2 + 3) = 0.71 of
    the training data, and argmax sharpens it)."""
    torch = pytest.importorskip("torch")
    vocab = 128
    key = derive_key(
        b"reading-power-master-secret-0123",
        "account",
        "harvester",
        1,
        scheme="kgw",
        scheme_params={"window": 1},
        tokenizer="synthetic",
        vocab_size=vocab,
    )
    scheme = build_scheme("kgw", {"window": 1})
    seed = scheme.seed(key)
    rng = np.random.default_rng(5)

    def marked(n_docs: int, length: int) -> np.ndarray:
        seqs = rng.integers(0, vocab, size=(n_docs, 1))
        out = [seqs[:, 0]]
        for _ in range(length):
            states = np.array([prf.window_state(seed, [int(t)]) for t in out[-1]], dtype=np.uint64)
            values = prf.vocab_values(states, vocab)
            out.append(scheme.select(np.full((n_docs, vocab), 1.0 / vocab), values, rng))
        return np.stack(out, axis=1)

    torch.set_num_threads(1)
    train = torch.tensor(marked(48, 300))
    torch.manual_seed(0)
    table = torch.zeros(vocab, vocab, requires_grad=True)
    opt = torch.optim.Adam([table], lr=0.1)
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(
            table[train[:, :-1]].reshape(-1, vocab), train[:, 1:].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    best = table.detach().argmax(dim=1).numpy()
    held_out = marked(40, 60)
    docs = [
        ReadingDoc((int(s[0]),), tuple(int(t) for t in s[1:]), tuple(int(best[t]) for t in s[:-1]))
        for s in held_out
    ]
    others = [
        derive_key(
            b"reading-power-master-secret-0123",
            "account",
            f"decoy-{i}",
            1,
            scheme="kgw",
            scheme_params={"window": 1},
            tokenizer="synthetic",
            vocab_size=vocab,
        )
        for i in range(999)
    ]
    out = reading_test(docs, [key, *others], [key, *others], None, min_tokens=40, filter="tuple")
    assert out.result.n >= 40 and not out.result.inconclusive
    assert out.result.log10_p <= -6, out.result.detail
    assert [a["ident"] for a in out.accounts] == ["harvester"]
    # the strict rule scores nothing here: with window 1 every window is shared between texts
    strict = reading_test(docs, [key], [key], None, min_tokens=40, filter="window")
    assert strict.result.inconclusive and math.isclose(strict.result.p_value, 1.0)
