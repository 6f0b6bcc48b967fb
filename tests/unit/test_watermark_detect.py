"""Detection rules: full windows only, prompt windows excluded, global dedup, Bonferroni, reporting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from antidistill.watermark import Detector, GumbelScheme, derive_key
from antidistill.watermark.simulate import SyntheticLM, generate_batch
from antidistill.watermark.tuples import extract

MASTER = bytes(range(32))
GUMBEL = derive_key(MASTER, "account", "a", 1)
KGW = derive_key(MASTER, "account", "a", 1, scheme="kgw")
OTHER = derive_key(MASTER, "account", "b", 1)


def _marked(key: object, n: int = 3, length: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prompts = rng.integers(0, 1000, (n, 8))
    scheme = key.build_scheme()  # type: ignore[attr-defined]
    toks = generate_batch(
        scheme,
        key,
        SyntheticLM(1000, 4.0, rng=np.random.default_rng(seed + 1)),  # type: ignore[arg-type]
        prompts,
        length,
        rng,
    )
    return prompts, toks


def test_tokens_before_the_first_full_window_are_not_scored() -> None:
    d = Detector().detect([np.arange(4), np.arange(5)], [GUMBEL])  # window 4: 0 and 1 tuple
    assert d.n_scored == 1 and d.n_tokens == 9
    s = GumbelScheme().score(np.arange(10), GUMBEL)
    assert np.isnan(s[:4]).all() and np.isfinite(s[4:]).all()


def test_global_dedup_counts_each_tuple_once() -> None:
    _, toks = _marked(GUMBEL, n=1)
    doc = toks[0]
    one = Detector().detect([doc], [GUMBEL])
    twice = Detector().detect([doc, doc.copy()], [GUMBEL])
    assert twice.n_scored == one.n_scored and twice.log10_p == one.log10_p
    # a 20-token phrase repeated 10 times has exactly 20 distinct (window, token) tuples
    phrase = np.random.default_rng(1).permutation(5000)[:20]
    rep = np.tile(phrase, 10)
    assert Detector().detect([rep], [GUMBEL]).n_scored == 20
    assert Detector(dedup=False).detect([rep], [GUMBEL]).n_scored == 196
    ts = extract([rep, rep], 4, dedup="document")
    assert ts.n_scored == 40 and ts.n_duplicates == 2 * 196 - 40


def test_windows_found_in_the_prompt_are_excluded() -> None:
    prompts, toks = _marked(GUMBEL, n=1, length=200)
    text = toks[0]
    assert Detector().detect([text], [GUMBEL], [prompts[0]]).log10_p < -20
    # the model only repeats watermarked text that was pasted into its prompt: no evidence
    pasted = np.concatenate((prompts[0], text))
    d = Detector().detect([text], [GUMBEL], [pasted])
    assert d.n_scored <= 4 and d.log10_p > -3
    assert "excluded (window in the prompt)" in d.explanation


def test_bonferroni_over_keys_and_looks() -> None:
    _, toks = _marked(GUMBEL, n=2, length=30)
    keys = [OTHER, GUMBEL, KGW]
    d = Detector(n_looks=2).detect(list(toks), keys)
    assert d.key_id == GUMBEL.key_id and d.scheme == "gumbel" and d.n_keys == 3
    assert d.log10_p_adj == pytest.approx(min(0.0, d.log10_p + math.log10(6)))
    assert d.p_value_adj == pytest.approx(10**d.log10_p_adj)
    assert [k.key_id for k in d.keys] == [k.key_id for k in keys]
    assert {k.scheme for k in d.keys} == {"gumbel", "kgw"}
    assert d.significant(1e-3)


def test_per_document_mode() -> None:
    _, marked = _marked(KGW, n=3, length=150)
    plain = np.random.default_rng(5).integers(0, 1000, (2, 150))
    docs = [*marked, *plain]
    d = Detector().detect(docs, [KGW], pool=False)
    assert not d.pooled and len(d.documents) == 5
    lps = [r.log10_p for r in d.documents]
    assert max(lps[:3]) < -5 and min(lps[3:]) > -3
    assert d.log10_p == pytest.approx(min(lps))
    assert d.log10_p_adj == pytest.approx(d.log10_p + math.log10(5))  # 1 key x 1 look x 5 documents
    assert d.n_scored == sum(r.n_scored for r in d.documents)
    # pooled: per-document entries are the documents' shares of the one pooled test
    pooled = Detector().detect(docs, [KGW])
    assert pooled.n_scored == sum(r.n_scored for r in pooled.documents)


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        Detector().detect([np.array([1, -2, 3, 4, 5])], [GUMBEL])
    with pytest.raises(ValueError):
        Detector().detect([np.arange(9)], [GUMBEL], prompt_seqs=[])
    with pytest.raises(ValueError):
        Detector().detect([np.arange(9)], [])
    with pytest.raises(ValueError):
        Detector(n_looks=0)


def test_empty_text_is_not_evidence() -> None:
    d = Detector().detect([np.array([], dtype=np.int64)], [GUMBEL, KGW])
    assert d.p_value == 1.0 and d.log10_p_adj == 0.0 and d.n_scored == 0
    assert Detector().attribute([np.arange(3)], [GUMBEL]) == []
