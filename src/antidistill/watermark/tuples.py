"""The (window, token) tuples a detection test scores, with the audit rules applied (vectorized).

Rules (DESIGN "Watermarking rules"):
* a token is scored only with a full window of ``h`` preceding tokens (with a prompt given, the
  prompt's last ``h`` tokens may complete the window of the first generated tokens);
* a tuple whose window occurs anywhere in the prompt is excluded (the model may be copying it);
* each tuple counts once: across everything pooled in one test (``dedup="global"``) or within each
  document (``dedup="document"``). ``dedup="none"`` exists only to demonstrate why dedup is needed.

Identity of windows and tuples is the unkeyed chain hash (``prf.DEDUP_SEED``): the kept tuples are
the same for every key, so they are extracted once and then scored with many keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from antidistill.watermark.schemes import prf

Dedup = Literal["global", "document", "none"]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class TupleSet:
    """Kept tuples (in document order) and the bookkeeping behind them."""

    window: int
    mix: prf.U64  # token mixes of all documents (prompt tails + generated tokens), concatenated
    starts: IntArray  # (n,) index in ``mix`` where each kept tuple's window starts (token at + window)
    doc: IntArray  # (n,) document index of each kept tuple (non-decreasing)
    doc_tokens: IntArray  # (n_docs,) generated tokens per document
    n_candidates: int  # tuples with a full window
    n_prompt_excluded: int
    n_duplicates: int

    @property
    def n_docs(self) -> int:
        return int(self.doc_tokens.shape[0])

    @property
    def n_scored(self) -> int:
        return int(self.doc.shape[0])

    def doc_bounds(self) -> tuple[IntArray, IntArray]:
        """(start, end) index range of each document's kept tuples."""
        ends = np.searchsorted(self.doc, np.arange(self.n_docs), side="right").astype(np.int64)
        starts = np.concatenate(([0], ends[:-1])).astype(np.int64)
        return starts, ends


def _as_ids(seq: Any) -> IntArray:
    arr = np.asarray(seq, dtype=np.int64).reshape(-1)
    if arr.size and int(arr.min()) < 0:
        raise ValueError("token ids must be non-negative")
    return arr


def _salt(hashes: prf.U64, doc: IntArray) -> prf.U64:
    return prf.fmix64(hashes + prf.token_mix(doc))


def extract(
    token_seqs: Sequence[Any],
    window: int,
    prompt_seqs: Sequence[Any] | None = None,
    *,
    dedup: Dedup = "global",
) -> TupleSet:
    """Apply the scoring rules to generated ``token_seqs`` (and their prompts, if known)."""
    if prompt_seqs is not None and len(prompt_seqs) != len(token_seqs):
        raise ValueError("prompt_seqs must be aligned with token_seqs")
    h = window
    gens = [_as_ids(s) for s in token_seqs]
    empty = np.empty(0, np.int64)
    prompts = [_as_ids(p) for p in prompt_seqs] if prompt_seqs is not None else [empty] * len(gens)
    tails = [p[max(0, p.shape[0] - h) :] for p in prompts]
    seqs = [np.concatenate((t, g)) for t, g in zip(tails, gens, strict=True)]
    lens = np.array([s.shape[0] for s in seqs], dtype=np.int64)
    first = np.array([max(h, t.shape[0]) for t in tails], dtype=np.int64)
    doc_tokens = np.array([g.shape[0] for g in gens], dtype=np.int64)
    n_docs = len(seqs)
    flat = np.concatenate(seqs) if seqs else np.empty(0, np.int64)
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), lens)
    offsets = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64) if n_docs else lens
    local = np.arange(flat.shape[0], dtype=np.int64) - offsets[doc_of] if n_docs else doc_of
    ends = np.flatnonzero(local >= first[doc_of]) if n_docs else doc_of
    mix = prf.token_mix(flat)
    starts = (ends - h).astype(np.int64)
    doc = doc_of[ends]
    n_candidates = int(ends.shape[0])

    seed0 = np.array(prf.DEDUP_SEED, dtype=np.uint64)
    win_hash = prf.chain_at(seed0, mix, starts, h)
    n_prompt_excluded = 0
    if prompt_seqs is not None and n_candidates:
        p_hashes, p_docs = [], []
        for d, p in enumerate(prompts):
            if p.shape[0] >= h:
                p_hashes.append(prf.chain(seed0, prf.sliding_mixes(p, h)))
                p_docs.append(np.full(p.shape[0] - h + 1, d, dtype=np.int64))
        if p_hashes:
            ph, pd = np.concatenate(p_hashes), np.concatenate(p_docs)
            if dedup == "global":  # pooled test: a window in any pooled prompt is excluded
                drop = np.isin(win_hash, ph)
            else:  # per-document test: only the document's own prompt
                drop = np.isin(_salt(win_hash, doc), _salt(ph, pd))
            n_prompt_excluded = int(drop.sum())
            keep = ~drop
            starts, doc, win_hash = starts[keep], doc[keep], win_hash[keep]

    n_duplicates = 0
    if dedup != "none" and doc.shape[0]:
        ident = prf.fmix64(win_hash + mix[starts + h])
        if dedup == "document":
            ident = _salt(ident, doc)
        _, first_idx = np.unique(ident, return_index=True)
        first_idx.sort()
        n_duplicates = int(doc.shape[0] - first_idx.shape[0])
        starts, doc = starts[first_idx], doc[first_idx]
    return TupleSet(h, mix, starts, doc, doc_tokens, n_candidates, n_prompt_excluded, n_duplicates)


def key_values(seeds: Sequence[int], tuples: TupleSet) -> NDArray[np.float64]:
    """PRF values (len(seeds), n_scored) of every kept tuple under each key seed."""
    s = np.asarray(list(seeds), dtype=np.uint64).reshape(-1, 1)
    return prf.to_unit(prf.chain_at(s, tuples.mix, tuples.starts, tuples.window + 1))
