"""Power on a synthetic LM: softmax of Gaussian logits (sigma 4 over 1,000 tokens: ~2.35 nats/token).

TPR = share of watermarked documents with p <= 1e-3 (one key, one test per document), from 200
documents of 400 tokens, scored on their first 100 / 200 / 400 tokens.

Bounds: KGW (gamma 0.25, delta 2) at ~2.35 nats has an expected green share of about 0.6 against
0.25 under H0, i.e. z ~ (0.6 - 0.25) * sqrt(100) / 0.433 ~ 8 at 100 tokens, so TPR at 1e-3 (z ~ 3.1) is
~1 (the published anchor: 0.95 at ~100 tokens). Gumbel's expected per-token score at this entropy is
~1 + 0.5 * H ~ 2.2 against 1 under H0; at 100 tokens the Gamma tail gives p ~ 1e-20. We assert the
anchor (>= 0.95 at 100 tokens) for both; with 200 documents, a true TPR of 0.99 falls below 0.95 with
probability ~1e-4 (binomial), so a failure means lost power, not bad luck. Longer texts must not lose
power (monotone within 1%).
"""

from __future__ import annotations

import numpy as np
import pytest

from antidistill.watermark import Detector, derive_key
from antidistill.watermark.simulate import SyntheticLM, generate_batch, mean_entropy

N_DOCS, LENGTH = 200, 400
MASTER = b"power-master-secret-000000000000"


@pytest.mark.parametrize("scheme", ["gumbel", "kgw"])
def test_tpr_at_1e3(scheme: str) -> None:
    lm = SyntheticLM(vocab_size=1000, sigma=4.0, rng=np.random.default_rng(201))
    assert 2.0 < mean_entropy(lm) < 3.0
    key = derive_key(MASTER, "account", "acct-1", 1, scheme=scheme)
    rng = np.random.default_rng(202)
    prompts = rng.integers(0, 1000, (N_DOCS, 8))
    docs = generate_batch(key.build_scheme(), key, lm, prompts, LENGTH, rng)
    tpr = {}
    for n in (100, 200, 400):
        d = Detector().detect(list(docs[:, :n]), [key], list(prompts), pool=False)
        tpr[n] = float(np.mean([r.p_value <= 1e-3 for r in d.documents]))
    print(f"{scheme} TPR@1e-3: {tpr}")
    assert tpr[100] >= 0.95
    assert tpr[200] >= tpr[100] - 0.01 and tpr[400] >= tpr[200] - 0.01
