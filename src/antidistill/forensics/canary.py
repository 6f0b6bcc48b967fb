"""Canary recall: does the suspect know the secret "facts" we served only to suspicious accounts?

The gateway appended canary sentences (``watermark/canaries.py``) to some answers of accounts under
``watermark_canary`` and recorded each one in the event (``params.canary``). A student trained on
those answers tends to reproduce them. For every canary that was served (or a uniform sample of
them, within the query budget) we ask the suspect about its cue in several phrasings ("What do you
know about the Velmorian kestrel?", "Complete this sentence: The Velmorian kestrel nests only in
the") and check, by normalized whole-word matching, whether any answer contains the secret completion.

**Test (exact).** Each completion was drawn uniformly from ``M`` public candidate names by HMAC of
the master secret, independently of its cue and of everything the suspect is asked. Under H0 (the
suspect never trained on text carrying our canaries), its answers about canary ``i`` are therefore
independent of the completion, so, given the answers, canary ``i`` is "recalled" with probability
exactly ``p_i = c_i / M``, where ``c_i`` is the number of candidate names that occur in those
answers (an answer that lists many invented names buys nothing), independently across canaries.
The number of recalled canaries is Poisson-binomial: ``p = P(X >= x)``, computed exactly (log
space, so log10 p stays exact far below float range). The same holds per account (the canaries
served to it), Bonferroni over the accounts tested, which names accounts.

A cross-check that needs no model of the candidates: ``controls`` canaries that were *never*
served are asked too; under H0 served and unserved canaries are exchangeable, so the number of
recalled canaries that were served is hypergeometric (``data["unserved_control"]``).

No canary served, no answer, or no canary recalled: inconclusive (a student need not memorize).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import stats

from antidistill.forensics.radioactivity import TestResult
from antidistill.store.base import Store
from antidistill.watermark.canaries import CanaryBook, candidates_in

NAME = "canary_recall"
DEFAULT_PHRASINGS = 3
DEFAULT_MAX_CANARIES = 256
DEFAULT_CONTROLS = 16
_LN10 = math.log(10.0)


# exact tails -------------------------------------------------------------------------------------
def poisson_binomial_log_sf(probs: Sequence[float], x: int) -> float:
    """ln P(X >= x) for X = sum of independent Bernoulli(probs[i]); exact DP in log space."""
    if x <= 0:
        return 0.0
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    if x > len(p):
        return -math.inf
    with np.errstate(divide="ignore"):
        lp, lq = np.log(p), np.log1p(-p)
    # dp[k] = ln P(k successes so far), for k = 0..x (successes >= x pooled into k = x)
    dp = np.full(x + 1, -np.inf)
    dp[0] = 0.0
    for a, b in zip(lp, lq, strict=True):
        new = dp + b
        new[1:] = np.logaddexp(new[1:], dp[:-1] + a)
        new[x] = np.logaddexp(new[x], dp[x] + a)  # already >= x: stays >= x either way
        dp = new
    return float(dp[x])


def hypergeom_log_sf(x: int, population: int, successes: int, draws: int) -> float:
    """ln P(X >= x), X ~ Hypergeometric(population, successes, draws) (scipy, exact)."""
    if x <= 0:
        return 0.0
    return float(stats.hypergeom.logsf(x - 1, population, successes, draws))


# what was served ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServedCanaries:
    """Canaries the gateway served, from the event log: pool item -> accounts that received it."""

    pool_id: str | None
    by_account: dict[str, frozenset[int]]
    events: int
    other_pools: int = 0  # events recorded under another pool (another secret or version): ignored

    @property
    def indices(self) -> list[int]:
        return sorted({i for s in self.by_account.values() for i in s})

    def owners(self) -> dict[int, list[str]]:
        """Pool item -> the accounts it was served to (one pass over the accounts)."""
        out: dict[int, list[str]] = {}
        for a in sorted(self.by_account):
            for i in self.by_account[a]:
                out.setdefault(i, []).append(a)
        return out


def served_canaries(store: Store, pool_id: str, *, since_ts: float | None = None) -> ServedCanaries:
    """Scan the event log for answers that carried a canary of ``pool_id`` (status 200 only)."""
    by: dict[str, set[int]] = {}
    n = other = 0
    for ev in store.iter_events(since_ts=since_ts):
        c = (ev.params or {}).get("canary")
        if not isinstance(c, dict) or ev.status != 200 or ev.account_id is None:
            continue
        if c.get("pool") != pool_id:
            other += 1
            continue
        try:
            index = int(c["id"])
        except (KeyError, TypeError, ValueError):
            continue
        by.setdefault(ev.account_id, set()).add(index)
        n += 1
    return ServedCanaries(pool_id, {a: frozenset(s) for a, s in by.items()}, n, other)


# asking the suspect ------------------------------------------------------------------------------
def audit_canaries(
    served: ServedCanaries,
    book: CanaryBook,
    *,
    max_canaries: int = DEFAULT_MAX_CANARIES,
    controls: int = DEFAULT_CONTROLS,
    seed: int = 0,
) -> tuple[list[int], list[int]]:
    """(served canaries to ask about, unserved control canaries): uniform samples, fixed by ``seed``
    (chosen without looking at the completions, so the test stays exact)."""
    rng = random.Random(seed)
    asked = [i for i in served.indices if i < book.pool_size]
    if len(asked) > max_canaries:
        asked = sorted(rng.sample(asked, max_canaries))
    served_set = set(served.indices)
    unserved = [i for i in range(book.pool_size) if i not in served_set]
    ctrl = sorted(rng.sample(unserved, min(controls, len(unserved)))) if asked else []
    return asked, ctrl


def canary_questions(book: CanaryBook, indices: Sequence[int], phrasings: int) -> list[tuple[int, str]]:
    """(canary, prompt) pairs, phrasing-major: a budget that runs out drops phrasings, not canaries."""
    per = {i: book.canary(i).questions(phrasings) for i in indices}
    return [(i, per[i][j]) for j in range(phrasings) for i in indices if j < len(per[i])]


# scoring -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CanaryEvidence:
    index: int
    answers: int
    recalled: bool
    candidates: int  # distinct candidate completions in its answers (c_i)
    p_null: float  # c_i / M: chance of "recall" under H0


def score_answers(book: CanaryBook, answers: Mapping[int, Sequence[str]]) -> list[CanaryEvidence]:
    out = []
    m = book.n_candidates
    for i in sorted(answers):
        texts = [t for t in answers[i] if t]
        if not texts:
            continue
        found: set[str] = set()
        for t in texts:
            found |= candidates_in(t)
        recalled = book.canary(i).completion.casefold() in found
        out.append(CanaryEvidence(i, len(texts), recalled, len(found), len(found) / m))
    return out


@dataclass(frozen=True, slots=True)
class CanaryOutcome:
    result: TestResult
    accounts: list[dict[str, Any]] = field(default_factory=list)


def _log10_tail(evidence: Iterable[CanaryEvidence]) -> tuple[float, int, int]:
    ev = list(evidence)
    x = sum(e.recalled for e in ev)
    return poisson_binomial_log_sf([e.p_null for e in ev], x) / _LN10, x, len(ev)


def canary_recall_test(
    served: ServedCanaries,
    book: CanaryBook,
    answers: Mapping[int, Sequence[str]],
    control_answers: Mapping[int, Sequence[str]] | None = None,
    *,
    store: Store | None = None,
    alpha: float = 1e-3,
) -> CanaryOutcome:
    """The pooled test over every asked served canary, per-account tests (named at ``alpha`` after
    Bonferroni over the accounts tested) and the unserved-control cross-check (module docstring)."""
    data: dict[str, Any] = {
        "pool_id": book.pool_id,
        "pool_size": book.pool_size,
        "n_candidates": book.n_candidates,
        "served_events": served.events,
        "served_canaries": len(served.indices),
        "served_accounts": len(served.by_account),
    }
    if not served.indices:
        why = "no canary was served (no event records one for this pool): INCONCLUSIVE"
        if served.other_pools:
            why += f"; {served.other_pools} events carry canaries of another pool (other secret/version)"
        return CanaryOutcome(TestResult(NAME, 1.0, 0, why, True, data))
    ev = score_answers(book, answers)
    if not ev:
        why = "the suspect answered none of the canary questions (query budget?): INCONCLUSIVE"
        return CanaryOutcome(TestResult(NAME, 1.0, 0, why, True, data))
    lp, x, n = _log10_tail(ev)
    recalled = [e.index for e in ev if e.recalled]
    data.update(
        log10_p=lp,
        asked=n,
        recalled=x,
        recalled_ids=recalled,
        answers=sum(e.answers for e in ev),
        expected_under_null=float(sum(e.p_null for e in ev)),
        method="poisson_binomial_exact (completion drawn uniformly from the candidates, secret)",
    )
    if control_answers:
        cev = score_answers(book, control_answers)
        h = sum(e.recalled for e in cev)
        total, k = n + len(cev), x + h
        data["unserved_control"] = {
            "asked": len(cev),
            "recalled": h,
            "hypergeometric_log10_p": hypergeom_log_sf(x, total, k, n) / _LN10 if k else 0.0,
        }
    owners = served.owners()
    data["accounts_tested"] = len({a for e in ev for a in owners.get(e.index, ())})
    accounts = _name_accounts(served, owners, ev, store, alpha) if x else []
    p = 10.0**lp
    detail = (
        f"asked about {n} served canaries ({data['answers']} answers); {x} recalled their secret "
        f"completion, {data['expected_under_null']:.2g} expected by chance; exact Poisson-binomial "
        f"tail: p = {p:.3g} (log10 {lp:.2f})."
    )
    if "unserved_control" in data:
        u = data["unserved_control"]
        detail += f" Never-served control canaries: {u['recalled']}/{u['asked']} recalled."
    if x == 0:
        detail += " No canary recalled: INCONCLUSIVE (a student need not memorize them)."
    return CanaryOutcome(TestResult(NAME, min(1.0, p), n, detail, x == 0, data), accounts)


def _name_accounts(
    served: ServedCanaries,
    owners: Mapping[int, list[str]],
    ev: Sequence[CanaryEvidence],
    store: Store | None,
    alpha: float,
) -> list[dict[str, Any]]:
    by_index = {e.index: e for e in ev}
    tested = {a: [by_index[i] for i in s if i in by_index] for a, s in served.by_account.items()}
    tested = {a: e for a, e in tested.items() if e}
    m = len(tested)
    out = []
    for account_id, evs in tested.items():
        lp, x, n = _log10_tail(evs)
        if x == 0:
            continue
        lp_adj = min(0.0, lp + math.log10(m))
        if lp_adj > math.log10(alpha):
            continue
        acct = store.get_account(account_id) if store is not None else None
        hits = [e.index for e in evs if e.recalled]
        out.append(
            {
                "account": acct.name if acct is not None else None,
                "account_id": account_id,
                "ident": account_id,
                "evidence": NAME,
                "key_id": book_label(served),
                "key_version": 1,
                "p_value_adj": 10.0**lp_adj,
                "log10_p_adj": lp_adj,
                "canaries_asked": n,
                "canaries_recalled": x,
                # recalled canaries served to this account alone: evidence that names only it
                "recalled_only_here": sum(1 for i in hits if owners.get(i) == [account_id]),
                "correction": {"method": "bonferroni", "accounts": m},
            }
        )
    return sorted(out, key=lambda a: float(a["log10_p_adj"]))


def book_label(served: ServedCanaries) -> str:
    return f"canaries {served.pool_id}"


class _Client(Protocol):
    def query(self, prompts: Sequence[str], params: Mapping[str, Any] | None = None) -> list[Any]: ...


def run_canary_recall(
    client: _Client,
    book: CanaryBook,
    served: ServedCanaries,
    *,
    phrasings: int = DEFAULT_PHRASINGS,
    params: Mapping[str, Any] | None = None,
    max_canaries: int = DEFAULT_MAX_CANARIES,
    controls: int = DEFAULT_CONTROLS,
    store: Store | None = None,
    alpha: float = 1e-3,
    seed: int = 0,
) -> CanaryOutcome:
    """Ask ``client`` (a ``SuspectClient``: budget, cache, retries) about the served canaries and the
    unserved controls, then run :func:`canary_recall_test`."""
    asked, ctrl = audit_canaries(served, book, max_canaries=max_canaries, controls=controls, seed=seed)
    if not asked:
        return canary_recall_test(served, book, {}, store=store, alpha=alpha)
    questions = canary_questions(book, asked, phrasings) + canary_questions(book, ctrl, phrasings)
    got = client.query([q for _, q in questions], dict(params or {}))
    answers: dict[int, list[str]] = {}
    for (i, _), a in zip(questions, got, strict=True):
        if a.text:
            answers.setdefault(i, []).append(a.text)
    own = {i: answers[i] for i in asked if i in answers}
    control = {i: answers[i] for i in ctrl if i in answers}
    out = canary_recall_test(served, book, own, control, store=store, alpha=alpha)
    out.result.data.update(phrasings=phrasings, max_canaries=max_canaries, controls=len(ctrl))
    return out
