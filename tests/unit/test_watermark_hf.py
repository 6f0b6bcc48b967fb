"""transformers LogitsProcessors: new tensors only, same PRF and choices as the numpy schemes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from antidistill.watermark import GumbelScheme, KgwScheme, derive_key  # noqa: E402
from antidistill.watermark.adapters.hf import GumbelLogitsProcessor, KgwLogitsProcessor  # noqa: E402

MASTER = bytes(range(32))
KGW = derive_key(MASTER, "account", "a", 1, scheme="kgw", scheme_params={"delta": 2.5})
GUMBEL = derive_key(MASTER, "account", "a", 1)


def _inputs(seed: int, b: int = 3, n: int = 9, v: int = 400) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, v, (b, n), generator=g), torch.randn(b, v, generator=g) * 2


def test_kgw_processor_adds_delta_to_green_tokens_without_touching_inputs() -> None:
    ids, scores = _inputs(0)
    ids0, scores0 = ids.clone(), scores.clone()
    proc = KgwLogitsProcessor(KGW)
    out = proc(ids, scores)
    assert torch.equal(ids, ids0) and torch.equal(scores, scores0)
    assert out.data_ptr() != scores.data_ptr() and out.dtype == scores.dtype
    scheme = KgwScheme(delta=2.5)
    for row in range(ids.shape[0]):
        green = scheme.green_mask(KGW, ids[row, -2:].tolist(), scores.shape[1])
        diff = (out[row] - scores[row]).numpy()
        np.testing.assert_allclose(diff[green], 2.5, rtol=1e-6)
        np.testing.assert_array_equal(diff[~green], 0.0)
        assert 0.15 < green.mean() < 0.35  # ~gamma of 400 candidates


def test_gumbel_processor_leaves_only_the_scheme_choice() -> None:
    ids, scores = _inputs(1)
    scores[0, :50] = -float("inf")  # as after a top-k / top-p warper
    ids0, scores0 = ids.clone(), scores.clone()
    proc = GumbelLogitsProcessor(GUMBEL, rng=np.random.default_rng(0))
    out = proc(ids, scores)
    assert torch.equal(ids, ids0) and torch.equal(scores, scores0)
    assert out.data_ptr() != scores.data_ptr()
    finite = torch.isfinite(out)
    assert finite.sum(dim=1).tolist() == [1, 1, 1]
    probs = torch.softmax(scores.double(), dim=1).numpy()
    scheme = GumbelScheme()
    for row in range(ids.shape[0]):
        values = scheme.vocab_values(GUMBEL, ids[row, -4:].tolist(), scores.shape[1])
        expected = int(scheme.select(probs[row][None], values[None], np.random.default_rng(0))[0])
        assert int(torch.nonzero(finite[row])[0]) == expected
    assert int(torch.nonzero(finite[0])[0]) >= 50
    # windows are tracked per row; a fresh generate() call (shorter input) resets them
    assert all(len(s) == 1 for s in proc._seen)
    proc(ids[:, :5], scores)
    assert all(len(s) == 1 for s in proc._seen)


def test_processors_reject_keys_of_the_other_scheme() -> None:
    with pytest.raises(ValueError):
        KgwLogitsProcessor(GUMBEL)
    with pytest.raises(ValueError):
        GumbelLogitsProcessor(KGW)
