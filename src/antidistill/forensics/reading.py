"""Radioactivity with open weights ("reading mode", Sander et al. 2024): does the suspect *predict* our
watermark when it reads our own watermarked texts?

We feed the suspect our served texts teacher-forced (the prompt as the gateway rendered it, then the
answer) and take its top-1 next-token prediction ``y_t`` at every answer position ``t``. Each position
gives a tuple (window ``w_t`` = the ``h`` tokens before ``t`` in OUR text, predicted token ``y_t``), scored
with every key exactly as the detector scores a (window, token) tuple: KGW green hit, Gumbel
``-ln(1 - r)``; exact tails (``betainc`` / ``gammaincc``), Bonferroni over keys, accounts named by
their own key's test over all account keys. A student that was trained on text marked with a key
predicts the marked tokens (it memorized them, or learned the key's bias): its tuples score high.

The null needs care, because the suspect's INPUT is our watermarked text. Under H0 the suspect's weights
are independent of the key, so ``y_t`` is a deterministic function of its context only. The PRF values
``r(w, .)`` of a window ``w`` influenced our text exactly where ``w`` was the window of a generated
token. If ``w_t`` already occurred earlier in the same text (or in its prompt), the context reveals which
token won under ``r(w_t, .)`` and a model that merely copies its context (an "induction head") predicts
that winner: its score is not Exp(1) / Bernoulli(gamma) any more, whatever the weights. So:

* ``filter="window"`` (default; exact): a position is scored only if its window has a full ``h`` tokens,
  is the first occurrence of that window in its own document (prompt included), occurs in no pooled
  prompt, and occurs in no other pooled document at all. Then every scored window's PRF row influenced
  nothing the suspect saw before that position and nothing in any other document, so (by a sequential
  argument within each document, conditionally on the rows of shared windows) the scores are exactly
  iid Exp(1) / Bernoulli(gamma) under H0 and the p-values are exact. Each window is scored at most once,
  so (window, token) tuples are unique too.
* ``filter="tuple"`` (the published method plus the own-context rule): first occurrence of the window in
  its own document, not in a pooled prompt, then global dedup of (window, predicted token) tuples. More
  tuples (windows shared between documents are kept), but a window seen by several documents can couple
  their scores slightly; checked empirically in the tests, not exact.
* ``filter="dedup-only"``: global (window, prediction) dedup without the own-context rule. For
  demonstrations only: a model that merely copies its context then fakes the signal (see the tests).

Texts come from the event log (answers served with a watermark) or are supplied. The suspect must use
our tokenizer (its predictions are token ids in our vocabulary); otherwise the test is inconclusive.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from antidistill.forensics.radioactivity import MIN_SCORED_TOKENS, RadioactivityOutcome, TestResult
from antidistill.store.base import Store
from antidistill.watermark.keys import WatermarkKey
from antidistill.watermark.schemes import build_scheme, prf
from antidistill.watermark.schemes.base import KeyedScheme
from antidistill.watermark.schemes.pvalues import bonferroni
from antidistill.watermark.texts import Document
from antidistill.watermark.tuples import TupleSet, key_values

Filter = Literal["window", "tuple", "dedup-only"]
NAME = "radioactivity_reading"
BUILTIN_TEXTS = 400
_BLOCK = 1 << 21  # PRF values per block of keys (bounds memory with thousands of keys)
_CURVE_POINTS = 12
IntArray = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ReadingDoc:
    """One served text as the suspect reads it: ``prompt`` ids (as rendered when served; may be empty)
    then ``text`` ids (the answer). ``pred[j]`` is the suspect's top-1 prediction for ``text[j]``."""

    prompt: tuple[int, ...]
    text: tuple[int, ...]
    pred: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.pred) != len(self.text):
            raise ValueError("one prediction per text token is needed")


@dataclass(frozen=True, slots=True)
class ReadingTuples:
    tuples: TupleSet  # mix holds [window..., predicted token] per kept tuple; starts = i * (window + 1)
    n_candidates: int  # positions with a full window
    n_prompt_excluded: int  # window inside a pooled prompt
    n_context_excluded: int  # window already seen earlier in the same document
    n_shared_excluded: int  # ("window" filter) window also occurs in another document
    n_duplicates: int  # ("tuple" filter) (window, prediction) already scored


def _window_hashes(mix: prf.U64, h: int) -> prf.U64:
    """Unkeyed hash of every window of ``h`` consecutive tokens: entry q is the window ending before q
    (tokens q-h .. q-1), for q = h .. len."""
    n = mix.shape[0]
    if n < h:
        return np.empty(0, np.uint64)
    starts = np.arange(0, n - h + 1, dtype=np.int64)
    return prf.chain_at(np.array(prf.DEDUP_SEED, dtype=np.uint64), mix, starts, h)


def reading_tuples(docs: Sequence[ReadingDoc], window: int, *, filter: Filter = "window") -> ReadingTuples:
    """The scored (window, prediction) tuples of ``docs`` under the rules in the module docstring."""
    h = window
    per_doc: list[tuple[IntArray, prf.U64, prf.U64, prf.U64]] = []  # kept pos, win hash, seq mix, all wins
    prompt_hashes: list[prf.U64] = []
    n_candidates = n_context = 0
    for d in docs:
        seq = np.asarray(d.prompt + d.text, dtype=np.int64)
        mix = prf.token_mix(seq)
        wins = _window_hashes(mix, h)  # wins[i] = window ending before position i + h
        lp = len(d.prompt)
        if lp >= h:
            prompt_hashes.append(wins[: lp - h + 1])
        pos = np.arange(max(lp, h), seq.shape[0], dtype=np.int64)  # scored positions (full window)
        n_candidates += int(pos.shape[0])
        wh = wins[pos - h] if pos.shape[0] else np.empty(0, np.uint64)
        # first occurrence of each window in this document (prompt included): earlier index wins
        _, first = np.unique(wins, return_index=True)
        first_of = dict(zip(wins[first].tolist(), first.tolist(), strict=True))
        fresh = np.array([first_of[w] == p - h for w, p in zip(wh.tolist(), pos.tolist(), strict=True)], bool)
        if filter == "dedup-only":  # demonstration only: no own-context rule
            fresh[:] = True
        n_context += int((~fresh).sum()) if pos.shape[0] else 0
        per_doc.append((pos[fresh] if pos.shape[0] else pos, wh[fresh] if pos.shape[0] else wh, mix, wins))
    all_prompt = np.unique(np.concatenate(prompt_hashes)) if prompt_hashes else np.empty(0, np.uint64)
    shared = np.empty(0, np.uint64)
    if filter == "window" and docs:
        uniq = [np.unique(w) for *_, w in per_doc]
        allw, counts = np.unique(np.concatenate(uniq) if uniq else np.empty(0, np.uint64), return_counts=True)
        shared = allw[counts > 1]
    elif filter not in ("tuple", "dedup-only"):
        raise ValueError(f"unknown filter {filter!r}: window | tuple")
    mixes: list[prf.U64] = []
    doc_ids: list[IntArray] = []
    idents: list[prf.U64] = []
    n_prompt = n_shared = 0
    for i, ((pos, wh, mix, _), d) in enumerate(zip(per_doc, docs, strict=True)):
        in_prompt = np.isin(wh, all_prompt)
        n_prompt += int(in_prompt.sum())
        keep = ~in_prompt
        if filter == "window":
            is_shared = np.isin(wh, shared) & keep
            n_shared += int(is_shared.sum())
            keep &= ~is_shared
        pos, wh = pos[keep], wh[keep]
        if not pos.shape[0]:
            continue
        lp = len(d.prompt)
        pred = np.asarray(d.pred, dtype=np.int64)[pos - lp]
        pmix = prf.token_mix(pred)
        cols = [mix[pos - h + j] for j in range(h)] + [pmix]
        mixes.append(np.stack(cols, axis=1).reshape(-1))
        doc_ids.append(np.full(pos.shape[0], i, dtype=np.int64))
        idents.append(prf.fmix64(wh + pmix))  # == chain over window + token: the detector's tuple identity
    flat = np.concatenate(mixes) if mixes else np.empty(0, np.uint64)
    doc = np.concatenate(doc_ids) if doc_ids else np.empty(0, np.int64)
    n_dup = 0
    if filter != "window" and doc.shape[0]:
        _, first_idx = np.unique(np.concatenate(idents), return_index=True)
        first_idx.sort()
        n_dup = int(doc.shape[0] - first_idx.shape[0])
        flat = flat.reshape(-1, h + 1)[first_idx].reshape(-1)
        doc = doc[first_idx]
    starts = np.arange(doc.shape[0], dtype=np.int64) * (h + 1)
    ts = TupleSet(
        window=h,
        mix=flat,
        starts=starts,
        doc=doc,
        doc_tokens=np.array([len(d.text) for d in docs], dtype=np.int64),
        n_candidates=n_candidates,
        n_prompt_excluded=n_prompt,
        n_duplicates=n_dup,
    )
    return ReadingTuples(ts, n_candidates, n_prompt, n_context, n_shared, n_dup)


@dataclass(frozen=True, slots=True)
class KeyScores:
    key: WatermarkKey
    n_scored: int
    statistic: float
    log10_p: float


def _groups(keys: Sequence[WatermarkKey]) -> dict[tuple[str, Any], tuple[KeyedScheme, list[int]]]:
    out: dict[tuple[str, Any], tuple[KeyedScheme, list[int]]] = {}
    for i, k in enumerate(keys):
        cfg = (k.scheme, k.scheme_params)
        if cfg not in out:
            out[cfg] = (build_scheme(k.scheme, k.params), [])
        out[cfg][1].append(i)
    return out


def score_keys(
    docs: Sequence[ReadingDoc],
    keys: Sequence[WatermarkKey],
    *,
    filter: Filter = "window",
    cache: dict[int, ReadingTuples] | None = None,
) -> tuple[list[KeyScores], dict[int, ReadingTuples]]:
    """One pooled test per key (unadjusted log10 p), with the tuples per window size."""
    if not keys:
        raise ValueError("at least one key is needed")
    cache = {} if cache is None else cache
    out: list[KeyScores | None] = [None] * len(keys)
    for scheme, idx in _groups(keys).values():
        if scheme.window not in cache:
            cache[scheme.window] = reading_tuples(docs, scheme.window, filter=filter)
        ts = cache[scheme.window].tuples
        seeds = [scheme.seed(keys[i]) for i in idx]
        totals = np.zeros(len(seeds))
        step = max(1, _BLOCK // max(1, ts.n_scored))
        for b in range(0, len(seeds), step):
            if ts.n_scored:
                totals[b : b + step] = scheme.tuple_scores(key_values(seeds[b : b + step], ts)).sum(axis=1)
        _, lp = scheme.combine_stats(np.full(len(idx), ts.n_scored), totals)
        for row, i in enumerate(idx):
            out[i] = KeyScores(keys[i], ts.n_scored, float(totals[row]), float(lp[row]))
    return [s for s in out if s is not None], cache


def _curve(best: KeyScores, rt: ReadingTuples, n_keys: int) -> list[tuple[int, float]]:
    """log10 p (Bonferroni over keys) of the best key on growing prefixes of the scored tuples (display
    only: the test is the single pooled one)."""
    ts = rt.tuples
    n = ts.n_scored
    if not n:
        return []
    scheme = best.key.build_scheme()
    scores = scheme.tuple_scores(key_values([scheme.seed(best.key)], ts))[0]
    csum = np.cumsum(scores)
    cuts = sorted({max(1, round(n * (i / _CURVE_POINTS) ** 1.5)) for i in range(1, _CURVE_POINTS + 1)})
    _, lp = scheme.combine_stats(np.array(cuts), csum[np.array(cuts) - 1])
    return [(c, float(bonferroni(v, n_keys))) for c, v in zip(cuts, lp, strict=True)]


def reading_test(
    docs: Sequence[ReadingDoc],
    keys: Sequence[WatermarkKey],
    account_keys: Sequence[WatermarkKey],
    store: Store | None,
    *,
    alpha: float = 1e-3,
    min_tokens: int = MIN_SCORED_TOKENS,
    filter: Filter = "window",
) -> RadioactivityOutcome:
    """The open-weights test: pooled over ``docs``, best of ``keys`` with Bonferroni over all of them;
    account keys significant at ``alpha`` after Bonferroni over ``account_keys`` name their accounts."""
    if not docs:
        return RadioactivityOutcome(TestResult(NAME, 1.0, 0, "no texts to read", True), [], [])
    scores, cache = score_keys(docs, keys, filter=filter)
    best = min(scores, key=lambda s: s.log10_p)
    lp_adj = float(bonferroni(best.log10_p, len(keys)))
    rt = cache[best.key.build_scheme().window]
    accounts = name_accounts(docs, account_keys, store, alpha=alpha, filter=filter, cache=cache)
    inconclusive = best.n_scored < min_tokens
    why = (
        f" INCONCLUSIVE: only {best.n_scored} scored tuples (< {min_tokens}); read more texts."
        if inconclusive
        else ""
    )
    n_text = sum(len(d.text) for d in docs)
    detail = (
        f"{len(docs)} watermarked texts ({n_text} tokens) read by the suspect; its top-1 predictions "
        f"scored as (window of our text, predicted token), filter {filter!r}: window {rt.tuples.window}: "
        f"{rt.n_candidates} positions with a full window, {rt.n_context_excluded} excluded (window seen "
        f"earlier in the same text), {rt.n_prompt_excluded} (window in a prompt), {rt.n_shared_excluded} "
        f"(window shared with another text), {rt.n_duplicates} repeated tuples; {best.n_scored} scored. "
        f"Best key {best.key.key_id} ({best.key.scheme}): log10 p = {best.log10_p:.2f}; Bonferroni over "
        f"{len(keys)} key(s): log10 p_adj = {lp_adj:.2f}.{why}"
    )
    result = TestResult(
        NAME,
        10.0**lp_adj,
        best.n_scored,
        detail,
        inconclusive,
        {
            "log10_p": lp_adj,
            "log10_p_unadjusted": best.log10_p,
            "n_tokens": n_text,
            "n_documents": len(docs),
            "n_keys": len(keys),
            "filter": filter,
            "best_key": {
                "key_id": best.key.key_id,
                "scope": best.key.scope,
                "ident": best.key.ident,
                "version": best.key.version,
            },
            "excluded": {
                "context": rt.n_context_excluded,
                "prompt": rt.n_prompt_excluded,
                "shared": rt.n_shared_excluded,
                "duplicate": rt.n_duplicates,
            },
            "min_tokens": min_tokens,
            "correction": {"method": "bonferroni", "keys": len(keys)},
        },
    )
    return RadioactivityOutcome(result, accounts, _curve(best, rt, len(keys)))


def name_accounts(
    docs: Sequence[ReadingDoc],
    account_keys: Sequence[WatermarkKey],
    store: Store | None,
    *,
    alpha: float = 1e-3,
    filter: Filter = "window",
    cache: dict[int, ReadingTuples] | None = None,
) -> list[dict[str, Any]]:
    """Owners of the account keys whose reading test survives Bonferroni over all ``account_keys``."""
    if not account_keys or not docs:
        return []
    scores, _ = score_keys(docs, account_keys, filter=filter, cache=cache)
    found = []
    for s in scores:
        lp_adj = float(bonferroni(s.log10_p, len(account_keys)))
        if lp_adj <= math.log10(alpha):
            k = s.key
            account = store.get_account(k.ident) if store is not None and k.scope == "account" else None
            found.append(
                {
                    "account": account.name if account is not None else None,
                    "account_id": k.ident if k.scope == "account" else None,
                    "scope": k.scope,
                    "ident": k.ident,
                    "key_id": k.key_id,
                    "key_version": k.version,
                    "scheme": k.scheme,
                    "p_value_adj": 10.0**lp_adj,
                    "log10_p_adj": lp_adj,
                    "log10_p_unadjusted": s.log10_p,
                    "n_scored": s.n_scored,
                }
            )
    return sorted(found, key=lambda a: float(a["log10_p_adj"]))


def event_log_documents(
    store: Store, n: int = BUILTIN_TEXTS, *, account_id: str | None = None, seed: int = 0
) -> list[Document]:
    """Up to ``n`` answers the gateway served with a watermark (chat or completion, status 200), with
    their prompts as served: a uniform sample when there are more."""
    docs: list[Document] = []
    for ev in store.iter_events(account_id=account_id):
        if ev.status != 200 or not ev.response or ev.watermark_key_id is None:
            continue
        req = ev.request or {}
        if isinstance(req.get("prompt"), str):
            docs.append(Document(ev.response, prompt=str(req["prompt"])))
            continue
        msgs = req.get("messages")
        if isinstance(msgs, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in msgs
        ):
            docs.append(Document(ev.response, messages=tuple((m["role"], m["content"]) for m in msgs)))
    if len(docs) > n:
        docs = random.Random(seed).sample(docs, n)
    return docs


@dataclass
class ReadingConfig:
    """Reading mode in an audit: which of our texts the suspect reads (supplied, else the event log)."""

    enabled: bool = True
    documents: list[Document] | None = None  # supplied watermarked texts (with prompts when known)
    n_texts: int = BUILTIN_TEXTS  # event log: a uniform sample of this many served answers
    account_id: str | None = None  # event log: only this account's answers
    filter: Filter = "window"
    min_tokens: int = MIN_SCORED_TOKENS


def same_vocabulary(fingerprint_a: str, fingerprint_b: str) -> bool:
    """Tokenizer fingerprints ``Class:size:hash`` name the same vocabulary (class names may differ)."""
    return fingerprint_a.split(":")[1:] == fingerprint_b.split(":")[1:]


def add_reading_test(
    arm: Any,
    client: Any,
    cfg: ReadingConfig,
    tok: Any,
    keys: Sequence[WatermarkKey],
    account_keys: Sequence[WatermarkKey],
    store: Store,
    *,
    alpha: float,
) -> None:
    """Append the reading-mode test to an audit ``arm`` whose ``client`` has local weights (a
    ``LocalSuspect``); HTTP suspects are left alone. Accounts it names join the arm's accounts."""
    if not cfg.enabled or not hasattr(client, "predict_top1"):
        return
    from antidistill.forensics.local_suspect import reading_docs
    from antidistill.watermark.keystore import tokenizer_fingerprint

    theirs = tokenizer_fingerprint(client.tokenizer)
    if not same_vocabulary(theirs, tok.fingerprint):
        arm.tests.append(
            TestResult(
                NAME,
                1.0,
                0,
                f"the suspect's tokenizer ({theirs}) is not ours ({tok.fingerprint}): its predictions cannot "
                "be read as our token ids. INCONCLUSIVE (the API-mode test still applies).",
                True,
            )
        )
        return
    docs = cfg.documents
    if docs is None:
        docs = event_log_documents(store, cfg.n_texts, account_id=cfg.account_id)
    if not docs:
        arm.tests.append(TestResult(NAME, 1.0, 0, "no watermarked texts to read: INCONCLUSIVE", True))
        return
    ids, prompt_ids = tok.encode(docs)
    outcome = reading_test(
        reading_docs(client, ids, prompt_ids),
        keys,
        account_keys,
        store,
        alpha=alpha,
        min_tokens=cfg.min_tokens,
        filter=cfg.filter,
    )
    arm.tests.append(outcome.result)
    known = {a.get("key_id") for a in arm.accounts}
    arm.accounts.extend({**a, "evidence": NAME} for a in outcome.accounts if a["key_id"] not in known)


def load_reading_texts(path: Any) -> list[Document]:
    """Supplied watermarked texts: JSON lines ``{"text", "prompt"?}`` or ``{"text", "messages"?}`` (the
    prompt as it was served, so that prompt windows are excluded and the suspect reads what was served)."""
    import json
    from pathlib import Path

    from antidistill.errors import ConfigError, InvalidRequestError
    from antidistill.watermark.texts import parse_document

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--reading-texts {p}: no such file")
    docs = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            docs.append(parse_document(json.loads(line), f"{p}:{n}"))
        except (ValueError, InvalidRequestError) as e:
            raise ConfigError(f"--reading-texts {p}:{n}: {e}") from e
    if not docs:
        raise ConfigError(f"--reading-texts {p}: no texts")
    return docs
