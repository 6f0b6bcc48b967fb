"""Radioactivity, API-only: is the suspect's own output marked with our keys?

A student trained on watermarked answers reproduces the watermark's bias in what it generates. We
prompt the suspect, pool its answers, tokenize them with the deployment's tokenizer and run the
existing exact test (``watermark.detect.Detector``): each (window, token) tuple counted once across the
pool (global dedup), windows inside the prompt excluded, one pooled test per key and Bonferroni over
every key (deployment, account, cluster; all versions). Accounts are named by ``Detector.attribute``
over the account keys (Bonferroni over all of them). Nothing here re-implements the statistics.

Under the null (the suspect never saw our marked text) the p-value is valid whatever the suspect is,
because the key is secret and independent of the suspect; too few scored tuples give "inconclusive".
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from antidistill.store.base import Event, Store
from antidistill.watermark.detect import Detector
from antidistill.watermark.keys import WatermarkKey
from antidistill.watermark.texts import Document, TextTokenizer, attribute_accounts

MIN_SCORED_TOKENS = 2000
BUILTIN_PROMPTS = 200
_CURVE_POINTS = 12


@dataclass(frozen=True, slots=True)
class TestResult:
    """One forensic test: an exact (adjusted) p-value, or ``inconclusive`` with the reason in ``detail``."""

    __test__ = False  # not a pytest test class

    name: str
    p_value: float
    n: int
    detail: str
    inconclusive: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def log10_p(self) -> float:
        """log10 of the p-value (exact even when ``p_value`` underflows to 0)."""
        if "log10_p" in self.data:
            return float(self.data["log10_p"])
        return math.log10(max(self.p_value, 5e-324))

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "p_value": self.p_value,
            "log10_p": self.log10_p,
            "n": self.n,
            "detail": self.detail,
            "inconclusive": self.inconclusive,
            **self.data,
        }


ProbeResult = TestResult


def builtin_prompts(n: int = BUILTIN_PROMPTS, seed: int = 0) -> list[str]:
    """``n`` diverse prompts from the offline corpora (the "test" half): MT-bench questions, HumanEval
    tasks, multilingual Q/A questions and chat utterances, interleaved. Deterministic for a seed."""
    from antidistill.evaluation.corpora import load_corpora

    c = load_corpora("test")
    rng = random.Random(seed)
    pools: list[list[str]] = [
        [q.turns[0] for q in c.mtbench],
        [t.prompt for t in c.humaneval],
        [p.question for p in c.qa if len(p.question) >= 12],
        list(c.utterances(min_chars=40)),
    ]
    for pool in pools:
        rng.shuffle(pool)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n and any(pools):
        for pool in pools:
            while pool:
                p = pool.pop()
                if p not in seen:
                    seen.add(p)
                    out.append(p)
                    break
            if len(out) >= n:
                break
    return out


def _event_prompt(event: Event) -> str | None:
    req = event.request or {}
    if isinstance(req.get("prompt"), str):
        return str(req["prompt"])
    users = [
        m.get("content") for m in req.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"
    ]
    last = users[-1] if users else None
    return last if isinstance(last, str) else None


def event_log_prompts(
    store: Store, n: int = BUILTIN_PROMPTS, *, account_id: str | None = None, seed: int = 0
) -> list[str]:
    """Up to ``n`` distinct prompts (last user turn) from the gateway's event log: prompts that resemble
    what was served (and so what a harvester trained on). A uniform sample when there are more."""
    prompts: list[str] = []
    seen: set[str] = set()
    for ev in store.iter_events(account_id=account_id):
        p = _event_prompt(ev)
        if p and p.strip() and p not in seen:
            seen.add(p)
            prompts.append(p)
    if len(prompts) > n:
        prompts = random.Random(seed).sample(prompts, n)
    return prompts


@dataclass(frozen=True, slots=True)
class RadioactivityOutcome:
    result: TestResult
    accounts: list[dict[str, Any]]
    curve: list[tuple[int, float]]  # (scored tuples, log10 p_adj) on growing prefixes of the pool


def _curve(
    detector: Detector, ids: list[list[int]], prompts: list[list[int]] | None, keys: Sequence[WatermarkKey]
) -> list[tuple[int, float]]:
    """Evidence accumulating with answers: the pooled test on ~12 growing prefixes (display only; the
    verdict is the single test on the whole pool, so these extra looks cost nothing)."""
    n = len(ids)
    cuts = sorted({max(1, round(n * (i / _CURVE_POINTS) ** 1.5)) for i in range(1, _CURVE_POINTS + 1)})
    out = []
    for c in cuts:
        det = detector.detect(ids[:c], keys, prompts[:c] if prompts is not None else None, pool=True)
        out.append((det.n_scored, det.log10_p_adj))
    return out


def radioactivity_test(
    pairs: Iterable[tuple[str, str]],
    tok: TextTokenizer,
    keys: Sequence[WatermarkKey],
    account_keys: Sequence[WatermarkKey],
    store: Store,
    *,
    alpha: float = 1e-3,
    min_tokens: int = MIN_SCORED_TOKENS,
    curve: bool = True,
) -> RadioactivityOutcome:
    """Score the suspect's (prompt, answer) ``pairs``: one pooled test per key, Bonferroni over ``keys``;
    accounts whose key survives Bonferroni over ``account_keys`` at ``alpha`` are named."""
    docs = [Document(text, prompt=prompt) for prompt, text in pairs if text]
    name = "radioactivity_api"
    if not docs:
        return RadioactivityOutcome(TestResult(name, 1.0, 0, "no answers to score", True), [], [])
    ids, prompt_ids = tok.encode(docs)
    detector = Detector()
    det = detector.detect(ids, keys, prompt_ids, pool=True)
    report: dict[str, Any] = {}
    accounts: list[dict[str, Any]] = []
    if account_keys:
        attribute_accounts(report, ids, prompt_ids, list(account_keys), store, alpha=alpha)
        accounts = report["accounts"]
    inconclusive = det.n_scored < min_tokens
    why = (
        f" INCONCLUSIVE: only {det.n_scored} scored tuples after dedup (< {min_tokens}); query more prompts."
        if inconclusive
        else ""
    )
    key = next(k for k in keys if k.key_id == det.key_id)
    result = TestResult(
        name,
        det.p_value_adj,
        det.n_scored,
        f"{len(docs)} answers pooled. {det.explanation}{why}",
        inconclusive,
        {
            "log10_p": det.log10_p_adj,
            "log10_p_unadjusted": det.log10_p,
            "n_tokens": det.n_tokens,
            "n_documents": len(docs),
            "n_keys": len(keys),
            "best_key": {
                "key_id": key.key_id,
                "scope": key.scope,
                "ident": key.ident,
                "version": key.version,
            },
            "min_tokens": min_tokens,
            "correction": {"method": "bonferroni", "keys": len(keys)},
        },
    )
    return RadioactivityOutcome(result, accounts, _curve(detector, ids, prompt_ids, keys) if curve else [])
