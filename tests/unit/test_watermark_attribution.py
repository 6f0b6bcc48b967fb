"""Attribution over 1,000 account keys: the harvesting account is named, nobody else.

With Bonferroni over all K = 1,000 keys, a key that did not mark the text is named with probability
<= alpha / K, so ANY wrong name appears with probability <= alpha = 1e-3 (union bound); the marking
key needs p <= 1e-6, which 1,000 tokens of ~2.35-nat text reach by hundreds of orders of magnitude.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from antidistill.watermark import Detector, Keyring, WatermarkKey
from antidistill.watermark.simulate import SyntheticLM, generate_batch

MASTER = b"attribution-master-secret-000000"
N_ACCOUNTS = 1000


@cache
def _ring(scheme: str) -> tuple[Keyring, tuple[WatermarkKey, ...]]:
    ring = Keyring(MASTER, "synthetic", 1000, default_scheme=scheme)
    keys = tuple(ring.account_key(f"acct-{i:04d}") for i in range(N_ACCOUNTS))
    return ring, keys


def _texts(key: WatermarkKey | None, seed: int, n: int = 10, length: int = 100) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lm = SyntheticLM(vocab_size=1000, sigma=4.0, rng=np.random.default_rng(seed + 1))
    prompts = rng.integers(0, 1000, (n, 8))
    scheme = key.build_scheme() if key is not None else None
    return list(generate_batch(scheme, key, lm, prompts, length, rng))


@pytest.mark.parametrize("scheme", ["gumbel", "kgw"])
def test_the_harvesting_account_is_named_and_nobody_else(scheme: str) -> None:
    ring, keys = _ring(scheme)
    assert len(ring.all_keys(scope="account")) == N_ACCOUNTS
    found = Detector().attribute(_texts(keys[417], seed=7), list(keys), alpha=1e-3)
    assert [a.ident for a in found] == ["acct-0417"]
    a = found[0]
    assert a.key_id == keys[417].key_id and a.scope == "account" and a.version == 1
    assert a.log10_p_adj < -6 and a.log10_p_adj == pytest.approx(a.log10_p + 3.0)
    # no prompts given: the first `window` tokens of each of the 10 documents have no full window
    full_windows = 10 * (100 - keys[417].build_scheme().window)
    assert 0.98 * full_windows <= a.n_scored <= full_windows  # a few repeats may be deduplicated


@pytest.mark.parametrize("scheme", ["gumbel", "kgw"])
def test_unwatermarked_text_names_nobody(scheme: str) -> None:
    _, keys = _ring(scheme)
    assert Detector().attribute(_texts(None, seed=8), list(keys), alpha=1e-3) == []


def test_two_harvesters_in_one_pool_are_both_named_strongest_first() -> None:
    _, keys = _ring("gumbel")
    texts = _texts(keys[42], seed=9, n=3) + _texts(keys[417], seed=10, n=10)
    found = Detector().attribute(texts, list(keys))
    assert [a.ident for a in found] == ["acct-0417", "acct-0042"]
    assert found[0].log10_p_adj < found[1].log10_p_adj
