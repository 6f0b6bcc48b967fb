"""Watermark detection quality: realized false-positive rates (10,000 unwatermarked documents per
corpus, with and without dedup), p-value uniformity, and power (TPR at p <= 1e-3) by text length
on synthetic LMs of two entropies.

Run: .venv/bin/python benchmarks/watermark_quality.py
Writes benchmarks/results/watermark_quality.json and prints tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from antidistill.watermark import Detector, WatermarkKey, derive_key
from antidistill.watermark.simulate import SyntheticLM, generate_batch, mean_entropy

OUT = Path(__file__).parent / "results" / "watermark_quality.json"
MASTER = b"quality-benchmark-master-secret0"
N_DOCS, ALPHA = 10_000, 1e-3


def _key(ident: str, scheme: str) -> WatermarkKey:
    return derive_key(MASTER, "account", ident, 1, scheme=scheme)


def _corpora(scheme: str) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    rng = np.random.default_rng(1)
    ranks = np.arange(5000)
    zipf = 1.0 / (ranks + 2.7) ** 1.1
    phrases = np.stack([rng.choice(5000, 20, replace=False) for _ in range(N_DOCS)])
    prompts = rng.integers(0, 64, (N_DOCS, 8))
    marker = _key("other-account", scheme)
    other = generate_batch(
        marker.build_scheme(), marker, SyntheticLM(64, 2.0, rng=np.random.default_rng(2)), prompts, 64, rng
    )
    return {
        "zipf random tokens (200)": (rng.choice(5000, size=(N_DOCS, 200), p=zipf / zipf.sum()), None),
        "other key's watermarked text (64)": (other, prompts),
        "20-token phrase x10 (200)": (np.tile(phrases, (1, 10)), None),
    }


def calibration() -> list[dict[str, Any]]:
    rows = []
    for scheme in ("gumbel", "kgw"):
        key = _key("acct-1", scheme)
        for name, (docs, prompts) in _corpora(scheme).items():
            for dedup in (True, False):
                prompt_list = None if prompts is None else list(prompts)
                d = Detector(dedup=dedup).detect(list(docs), [key], prompt_list, pool=False)
                p = np.array([r.p_value for r in d.documents])
                fp = int((p <= ALPHA).sum())
                lo, hi = stats.binomtest(fp, N_DOCS).proportion_ci(0.95, method="wilson")
                rows.append(
                    {
                        "scheme": scheme,
                        "corpus": name,
                        "dedup": dedup,
                        "n_docs": N_DOCS,
                        "false_positives": fp,
                        "fpr": fp / N_DOCS,
                        "fpr_ci95": [lo, hi],
                        "fpr_at_0.01": float((p <= 0.01).mean()),
                        "ks_uniform_p": float(stats.kstest(p, "uniform").pvalue),
                    }
                )
    return rows


def power() -> list[dict[str, Any]]:
    rows = []
    for sigma in (4.0, 7.0):
        lm_probe = SyntheticLM(1000, sigma)
        entropy = mean_entropy(lm_probe)
        for scheme in ("gumbel", "kgw"):
            key = _key("acct-1", scheme)
            rng = np.random.default_rng(3)
            prompts = rng.integers(0, 1000, (300, 8))
            lm = SyntheticLM(1000, sigma, rng=np.random.default_rng(4))
            docs = generate_batch(key.build_scheme(), key, lm, prompts, 400, rng)
            for n in (25, 50, 100, 200, 400):
                d = Detector().detect(list(docs[:, :n]), [key], list(prompts), pool=False)
                lp = np.array([r.log10_p for r in d.documents])
                rows.append(
                    {
                        "scheme": scheme,
                        "entropy_nats": round(entropy, 2),
                        "tokens": n,
                        "n_docs": 300,
                        "tpr_at_1e-3": float((lp <= -3).mean()),
                        "median_log10_p": float(np.median(lp)),
                    }
                )
    return rows


def main() -> None:
    cal, pw = calibration(), power()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"alpha": ALPHA, "calibration": cal, "power": pw}, indent=2))
    print(
        f"{'scheme':<7} {'corpus':<34} {'dedup':<6} {'FP/10k':>7} {'FPR 95% CI':>18} {'FPR@.01':>8} "
        f"{'KS p':>8}"
    )
    for r in cal:
        ci = f"[{r['fpr_ci95'][0]:.4f},{r['fpr_ci95'][1]:.4f}]"
        print(
            f"{r['scheme']:<7} {r['corpus']:<34} {r['dedup']!s:<6} {r['false_positives']:>7} {ci:>18} "
            f"{r['fpr_at_0.01']:>8.4f} {r['ks_uniform_p']:>8.3g}"
        )
    print(f"\n{'scheme':<7} {'H nats':>6} {'tokens':>6} {'TPR@1e-3':>9} {'median log10 p':>15}")
    for r in pw:
        print(
            f"{r['scheme']:<7} {r['entropy_nats']:>6} {r['tokens']:>6} {r['tpr_at_1e-3']:>9.3f} "
            f"{r['median_log10_p']:>15.1f}"
        )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
