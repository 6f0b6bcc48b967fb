"""Exact, deduplicated watermark detection and multi-key attribution.

``Detector.detect`` tests token sequences against a few keys (pooled into one test, or one test per
document) and reports exact p-values in log10, Bonferroni-adjusted for the number of keys and looks.
``Detector.attribute`` tests pooled text against thousands of keys at once and names only the keys
that stay significant after Bonferroni over all of them. See ``tuples`` for the scoring rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from antidistill.watermark.keys import WatermarkKey
from antidistill.watermark.schemes import build_scheme
from antidistill.watermark.schemes.base import KeyedScheme
from antidistill.watermark.schemes.pvalues import bonferroni
from antidistill.watermark.tuples import Dedup, TupleSet, extract, key_values

_BLOCK = 1 << 21  # PRF values computed per block of keys (elements), bounds memory


@dataclass(frozen=True, slots=True)
class KeyResult:
    key_id: str
    scheme: str
    n_scored: int
    statistic: float  # gumbel: sum of -ln(1-r); kgw: green count
    p_value: float
    log10_p: float


@dataclass(frozen=True, slots=True)
class DocumentResult:
    """One document. Pooled: its share of the pooled test (tuples first seen in it); else its own test."""

    index: int
    n_tokens: int
    n_scored: int
    key_id: str
    p_value: float
    log10_p: float
    log10_p_adj: float


@dataclass(frozen=True, slots=True)
class Detection:
    p_value: float
    log10_p: float
    p_value_adj: float
    log10_p_adj: float
    n_scored: int
    n_tokens: int
    key_id: str
    scheme: str
    pooled: bool
    n_keys: int
    n_looks: int
    documents: tuple[DocumentResult, ...]
    keys: tuple[KeyResult, ...]
    explanation: str

    def significant(self, alpha: float) -> bool:
        return self.log10_p_adj <= math.log10(alpha)


@dataclass(frozen=True, slots=True)
class Attribution:
    ident: str
    scope: str
    key_id: str
    version: int
    scheme: str
    n_scored: int
    log10_p: float
    p_value_adj: float
    log10_p_adj: float


_Group = tuple[KeyedScheme, list[int]]
_Scored = tuple[KeyedScheme, list[int], TupleSet, NDArray[np.float64]]


def _schemes(keys: Sequence[WatermarkKey]) -> dict[tuple[str, tuple[Any, ...]], _Group]:
    """Group key indices by scheme configuration (one tuple extraction per window size)."""
    groups: dict[tuple[str, tuple[Any, ...]], _Group] = {}
    for i, k in enumerate(keys):
        cfg = (k.scheme, k.scheme_params)
        if cfg not in groups:
            groups[cfg] = (build_scheme(k.scheme, k.params), [])
        groups[cfg][1].append(i)
    return groups


def _doc_stats(scheme: KeyedScheme, seeds: list[int], ts: TupleSet) -> NDArray[np.float64]:
    """(n_keys, n_docs) score sums: every key over every document's kept tuples."""
    starts, ends = ts.doc_bounds()
    out = np.zeros((len(seeds), ts.n_docs))
    step = max(1, _BLOCK // max(1, ts.n_scored))
    for b in range(0, len(seeds), step):
        scores = scheme.tuple_scores(key_values(seeds[b : b + step], ts))
        csum = np.concatenate((np.zeros((scores.shape[0], 1)), np.cumsum(scores, axis=1)), axis=1)
        out[b : b + step] = csum[:, ends] - csum[:, starts]
    return out


class Detector:
    """``n_looks``: how many times this evidence has been tested (Bonferroni). ``dedup=False`` is for
    demonstrations only: without it repetitive text gives false positives far above nominal."""

    def __init__(self, n_looks: int = 1, *, dedup: bool = True) -> None:
        if n_looks < 1:
            raise ValueError("n_looks must be >= 1")
        self.n_looks = n_looks
        self.dedup = dedup

    def _scored(
        self,
        token_seqs: Sequence[Any],
        keys: Sequence[WatermarkKey],
        prompt_seqs: Sequence[Any] | None,
        mode: Dedup,
    ) -> tuple[list[_Scored], int]:
        if not keys:
            raise ValueError("at least one key is needed")
        cache: dict[int, TupleSet] = {}
        out: list[_Scored] = []
        for scheme, idx in _schemes(keys).values():
            if scheme.window not in cache:
                cache[scheme.window] = extract(
                    token_seqs, scheme.window, prompt_seqs, dedup=mode if self.dedup else "none"
                )
            ts = cache[scheme.window]
            out.append((scheme, idx, ts, _doc_stats(scheme, [scheme.seed(keys[i]) for i in idx], ts)))
        n_tokens = int(next(iter(cache.values())).doc_tokens.sum())
        return out, n_tokens

    def detect(
        self,
        token_seqs: Sequence[Any],
        keys: Sequence[WatermarkKey],
        prompt_seqs: Sequence[Any] | None = None,
        pool: bool = True,
    ) -> Detection:
        """Test generated ``token_seqs`` (prompts excluded; give them as ``prompt_seqs`` if known).

        Pooled: one test per key over the globally deduplicated tuples of all documents; the best key
        is reported, adjusted by n_keys * n_looks. Not pooled: one test per document and key (dedup
        within the document), each adjusted by n_keys * n_looks; the summary is the most significant
        document, adjusted by n_keys * n_looks * n_documents.
        """
        groups, n_tokens = self._scored(token_seqs, keys, prompt_seqs, "global" if pool else "document")
        n_keys, n_docs = len(keys), len(token_seqs)
        factor = n_keys * self.n_looks
        doc_p, doc_lp = np.ones((n_keys, n_docs)), np.zeros((n_keys, n_docs))
        doc_n = np.zeros((n_keys, n_docs), dtype=np.int64)
        key_ts: dict[int, TupleSet] = {}
        results: dict[int, KeyResult] = {}
        for scheme, idx, ts, stats in groups:
            starts, ends = ts.doc_bounds()
            n_doc = ends - starts
            p, lp = scheme.combine_stats(np.broadcast_to(n_doc, stats.shape).ravel(), stats.ravel())
            doc_p[idx], doc_lp[idx], doc_n[idx] = p.reshape(stats.shape), lp.reshape(stats.shape), n_doc
            p_all, lp_all = scheme.combine_stats(np.full(len(idx), ts.n_scored), stats.sum(axis=1))
            for row, i in enumerate(idx):
                key_ts[i] = ts
                if pool:
                    results[i] = KeyResult(
                        keys[i].key_id,
                        scheme.name,
                        ts.n_scored,
                        float(stats[row].sum()),
                        float(p_all[row]),
                        float(lp_all[row]),
                    )
                else:
                    j = int(np.argmin(lp[row * n_docs : (row + 1) * n_docs])) if n_docs else 0
                    results[i] = KeyResult(
                        keys[i].key_id,
                        scheme.name,
                        int(n_doc[j]) if n_docs else 0,
                        float(stats[row, j]) if n_docs else 0.0,
                        float(doc_p[i, j]) if n_docs else 1.0,
                        float(doc_lp[i, j]) if n_docs else 0.0,
                    )
        doc_best = np.argmin(doc_lp, axis=0) if n_docs else np.zeros(0, dtype=np.int64)
        cols = np.arange(n_docs)
        doc_adj = bonferroni(doc_lp[doc_best, cols], factor)
        documents = tuple(
            DocumentResult(
                d,
                int(key_ts[int(k)].doc_tokens[d]),
                int(doc_n[k, d]),
                keys[int(k)].key_id,
                float(doc_p[k, d]),
                float(doc_lp[k, d]),
                float(doc_adj[d]),
            )
            for d, k in enumerate(doc_best)
        )
        best = min(range(n_keys), key=lambda i: results[i].log10_p)
        kr = results[best]
        total_factor = factor if pool else factor * max(1, n_docs)
        n_scored = kr.n_scored if pool else int(doc_n[best].sum())
        lp_adj = float(bonferroni(kr.log10_p, total_factor))
        explanation = self._explain(key_ts[best], n_tokens, pool, kr, lp_adj, n_keys, total_factor)
        return Detection(
            p_value=kr.p_value,
            log10_p=kr.log10_p,
            p_value_adj=10.0**lp_adj,
            log10_p_adj=lp_adj,
            n_scored=n_scored,
            n_tokens=n_tokens,
            key_id=kr.key_id,
            scheme=kr.scheme,
            pooled=pool,
            n_keys=n_keys,
            n_looks=self.n_looks,
            documents=documents,
            keys=tuple(results[i] for i in range(n_keys)),
            explanation=explanation,
        )

    def _explain(
        self, ts: TupleSet, n_tokens: int, pool: bool, kr: KeyResult, lp_adj: float, n_keys: int, factor: int
    ) -> str:
        mode = "pooled into one test" if pool else "tested one by one"
        dedup = (
            "each (window, token) tuple counted once " + ("across the pool" if pool else "per document")
            if self.dedup
            else "NO deduplication (not valid evidence on repetitive text)"
        )
        best = "" if pool else " (most significant document)"
        return (
            f"{ts.n_docs} document(s), {n_tokens} generated tokens, {mode}; window {ts.window}: "
            f"{ts.n_candidates} tuples with a full window, {ts.n_prompt_excluded} excluded (window in the "
            f"prompt), {ts.n_duplicates} repeats dropped; {dedup}. Best key {kr.key_id} ({kr.scheme}){best}: "
            f"log10 p = {kr.log10_p:.2f}; Bonferroni over {n_keys} key(s) x {self.n_looks} look(s)"
            + ("" if pool else f" x {ts.n_docs} document(s)")
            + f" (factor {factor}): log10 p_adj = {lp_adj:.2f}."
        )

    def attribute(
        self,
        token_seqs: Sequence[Any],
        keys: Sequence[WatermarkKey],
        alpha: float = 1e-3,
        prompt_seqs: Sequence[Any] | None = None,
    ) -> list[Attribution]:
        """Keys whose pooled test is significant at ``alpha`` after Bonferroni over all keys, strongest
        first. Text marked with none of the keys names nobody (with probability >= 1 - alpha)."""
        groups, _ = self._scored(token_seqs, keys, prompt_seqs, "global")
        factor = len(keys) * self.n_looks
        found: list[Attribution] = []
        for scheme, idx, ts, stats in groups:
            totals = stats.sum(axis=1)
            _, lp = scheme.combine_stats(np.full(len(idx), ts.n_scored), totals)
            lp_adj = bonferroni(lp, factor)
            for row in np.flatnonzero(lp_adj <= math.log10(alpha)):
                k = keys[idx[row]]
                found.append(
                    Attribution(
                        k.ident,
                        k.scope,
                        k.key_id,
                        k.version,
                        k.scheme,
                        ts.n_scored,
                        float(lp[row]),
                        float(10.0 ** lp_adj[row]),
                        float(lp_adj[row]),
                    )
                )
        return sorted(found, key=lambda a: a.log10_p_adj)
