"""Detection-quality metrics for the evaluation harness (pure computation, no engine code).

The harness replays labelled traffic through each detector and hands :func:`evaluate` one
:class:`AccountOutcome` per (detector, account) and one or more :class:`RunCost` per detector.

Definitions (all per detector):

* Flag rule at a threshold ``t``: ``score >= t`` (``score`` is the account's max score over the run).
  The threshold for target FPR ``a`` is the smallest one whose realized benign FPR is ``<= a``: with
  ``k = floor(a * n_benign)`` allowed false alarms and benign scores sorted descending ``s[0] >= s[1]
  >= ...``, it is the next float above ``s[k]``. Any lower threshold flags ``s[k]`` and everything
  above it, i.e. ``> k`` benign accounts. The thresholds are picked on the same benign accounts the FPR
  is reported on (in-sample), so the realized FPR is ``<= a`` by construction.
* A target FPR ``a`` is only meaningful with ``n_benign >= ceil(3 / a)`` (rule of three: 0 alarms in
  ``n`` bounds the FPR at ~``3/n`` with 95% confidence); below that the op point is ``underpowered``.
* The third operating point, ``deployed``, is the detector's own flag: ``first_flag_ts is not None``.
* Rates carry Wilson 95% intervals (:func:`wilson`); a rate over 0 units is ``nan`` (null in JSON).
* Requests before the first flag are known only for the deployed op point (the outcome carries the
  max score, not when each threshold was crossed). Per account: ``requests_before_flag`` (kind
  ``requests``) or ``attack_requests_before_flag`` (kind ``attack_requests``, falling back to the
  former). A never-flagged account counts as its full ``n_requests``; for ``attack_requests`` an account
  with a ``share`` counts ``share * n_requests`` (an estimate: assumes ``share`` is the attack fraction of
  its traffic). Flagged accounts with a missing count are counted at ``n_requests`` (an upper bound) and
  reported as ``n_missing``. Quantiles: numpy linear interpolation.
* Campaigns: caught at an op point if any member is flagged. Attack requests served by the whole
  campaign before its first member's flag at time ``T`` are bracketed, since outcomes carry per-account
  counts at each account's own flag only: ``lower`` = the counts of the member(s) flagged at ``T`` (the
  others counted as 0), ``upper`` = ``lower`` + every other member's count up to its own flag (or its
  full count if never flagged). ``upper`` is the conservative headline. An uncaught campaign counts its
  members' full totals (lower = upper).
* ROC per family: benign vs that family's attack accounts, thresholds at every distinct score; AUC is
  the Mann-Whitney statistic (ties count 1/2). Stored curves are thinned to <= ``MAX_ROC_POINTS``.
* Cost: summed over a detector's :class:`RunCost` rows, seconds per 1M requests.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from scipy.stats import norm, rankdata

SCHEMA = "antidistill.detection/1"
Z95 = float(norm.ppf(0.975))
TARGET_FPRS: dict[str, float] = {"fpr_1pct": 0.01, "fpr_0.1pct": 0.001}
DEPLOYED = "deployed"
OP_POINTS: tuple[str, ...] = (*TARGET_FPRS, DEPLOYED)
DELAY_KINDS = ("attack_requests", "requests")
MAX_ROC_POINTS = 400
SMALL_GROUP = 20  # groups with fewer units get a "wide interval" warning
NAN = float("nan")

Label = Literal["benign", "attack"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class AccountOutcome:
    account: str
    label: Label
    family: str
    share: float | None
    detector: str
    score: float  # max score this detector gave the account over the run, in [0, 1]
    n_requests: int
    first_flag_ts: float | None  # None: never flagged by the detector's own rule
    requests_before_flag: int | None
    attack_requests_before_flag: int | None
    cluster: str | None
    campaign: str | None  # groups the accounts of one multi-account (hydra/adaptive) campaign

    def __post_init__(self) -> None:
        if self.label not in ("benign", "attack"):
            raise ValueError(f"label must be 'benign' or 'attack', got {self.label!r}")
        if not (math.isfinite(self.score) and 0.0 <= self.score <= 1.0):
            raise ValueError(f"score must be in [0, 1], got {self.score!r} ({self.account})")
        if self.n_requests < 0:
            raise ValueError(f"n_requests must be >= 0 ({self.account})")


@dataclass(frozen=True)
class RunCost:
    detector: str
    requests: int
    seconds_cpu: float
    seconds_wall: float


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (nan, nan when n == 0)."""
    if n <= 0:
        return NAN, NAN
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p, z2 = k / n, z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, center - half)
    hi = 1.0 if k == n else min(1.0, center + half)
    return lo, hi


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else NAN, "lo": lo, "hi": hi}


def threshold_for_fpr(benign_scores: Iterable[float], target: float) -> float:
    """Smallest threshold t (flag: score >= t) whose realized FPR on these scores is <= target."""
    s = np.sort(np.asarray(list(benign_scores), dtype=float))[::-1]
    if s.size == 0:
        return NAN
    k = math.floor(target * s.size + 1e-9)
    if k >= s.size:
        return float(s[-1])
    return float(np.nextafter(s[k], np.inf))


def roc_curve(benign: Sequence[float], attack: Sequence[float]) -> tuple[list[float], list[float]]:
    """(fpr, tpr) at every distinct score, from (0, 0) to (1, 1); thinned to MAX_ROC_POINTS."""
    b, a = np.sort(np.asarray(benign, dtype=float)), np.sort(np.asarray(attack, dtype=float))
    if b.size == 0 or a.size == 0:
        return [], []
    thr = np.unique(np.concatenate([b, a]))[::-1]
    fpr = np.concatenate([[0.0], (b.size - np.searchsorted(b, thr, side="left")) / b.size])
    tpr = np.concatenate([[0.0], (a.size - np.searchsorted(a, thr, side="left")) / a.size])
    if fpr.size > MAX_ROC_POINTS:
        idx = np.unique(np.linspace(0, fpr.size - 1, MAX_ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    return [float(x) for x in fpr], [float(x) for x in tpr]


def auc(benign: Sequence[float], attack: Sequence[float]) -> float:
    """P(attack score > benign score) + 1/2 P(tie) (Mann-Whitney); nan if a side is empty."""
    nb, na = len(benign), len(attack)
    if nb == 0 or na == 0:
        return NAN
    ranks = rankdata(np.concatenate([np.asarray(benign, float), np.asarray(attack, float)]))
    return float((ranks[nb:].sum() - na * (na + 1) / 2) / (na * nb))


def _quantiles(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return NAN, NAN
    q = np.quantile(np.asarray(values, dtype=float), [0.5, 0.9])
    return float(q[0]), float(q[1])


def served_before_flag(o: AccountOutcome, kind: str = "attack_requests") -> tuple[float, bool, bool]:
    """(requests served before the deployed flag, flagged, count_missing) for one account."""
    if o.first_flag_ts is not None:
        v = o.requests_before_flag
        if kind == "attack_requests" and o.attack_requests_before_flag is not None:
            v = o.attack_requests_before_flag
        return (float(o.n_requests), True, True) if v is None else (float(v), True, False)
    if kind == "attack_requests" and o.share is not None:
        return o.n_requests * o.share, False, False
    return float(o.n_requests), False, False


def delay_stats(accounts: Sequence[AccountOutcome], kind: str = "attack_requests") -> dict[str, Any]:
    allv: list[float] = []
    flagged: list[float] = []
    never: list[float] = []
    missing = 0
    for o in accounts:
        v, is_flagged, miss = served_before_flag(o, kind)
        allv.append(v)
        (flagged if is_flagged else never).append(v)
        missing += miss
    med, p90 = _quantiles(allv)
    fmed, fp90 = _quantiles(flagged)
    return {
        "n": len(allv),
        "n_flagged": len(flagged),
        "n_never_flagged": len(never),
        "n_missing": missing,
        "median": med,
        "p90": p90,
        "median_flagged": fmed,
        "p90_flagged": fp90,
        "never_flagged_requests": float(sum(never)),
        "flagged_values": sorted(flagged),
    }


def campaign_delay(members: Sequence[AccountOutcome]) -> dict[str, Any]:
    """Attack requests a campaign was served before its first member's deployed flag (see module doc)."""
    served = [served_before_flag(m)[0] for m in members]
    times = [m.first_flag_ts for m in members if m.first_flag_ts is not None]
    fam = Counter(m.family for m in members).most_common(1)[0][0]
    out = {
        "family": fam,
        "members": len(members),
        "members_flagged": len(times),
        "requests_total": float(sum(m.n_requests for m in members)),
    }
    if not times:
        total = float(sum(served))
        return {**out, "caught": False, "first_flag_ts": None, "lower": total, "upper": total}
    t0 = min(times)
    first = [m.first_flag_ts == t0 for m in members]
    lower = float(sum(v for v, f in zip(served, first, strict=True) if f))
    return {**out, "caught": True, "first_flag_ts": t0, "lower": lower, "upper": float(sum(served))}


def _group(items: Iterable[_T], key: Callable[[_T], Any]) -> dict[Any, list[_T]]:
    groups: dict[Any, list[_T]] = defaultdict(list)
    for o in items:
        groups[key(o)].append(o)
    return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))


def _op_point(
    benign: Sequence[AccountOutcome],
    attack: Sequence[AccountOutcome],
    campaigns: dict[str, list[AccountOutcome]],
    flag: Callable[[AccountOutcome], bool],
    available: bool = True,
) -> dict[str, Any]:
    b = rate(sum(map(flag, benign)), len(benign))
    b.update(per_10k=b["rate"] * 1e4, per_10k_lo=b["lo"] * 1e4, per_10k_hi=b["hi"] * 1e4)

    def r(group: Sequence[AccountOutcome]) -> dict[str, Any]:
        return rate(sum(map(flag, group)), len(group))

    shares = _group((o for o in attack if o.share is not None), lambda o: (o.family, o.share))
    caught = {c: any(map(flag, ms)) for c, ms in campaigns.items()}
    camp_fam = _group(campaigns, lambda c: Counter(m.family for m in campaigns[c]).most_common(1)[0][0])
    return {
        "available": available,
        "benign": b,
        "benign_families": {f: r(g) for f, g in _group(benign, lambda o: o.family).items()},
        "overall": r(attack),
        "families": {f: r(g) for f, g in _group(attack, lambda o: o.family).items()},
        "shares": [
            {"family": f, "share": s, **r(g)}
            for (f, s), g in sorted(shares.items(), key=lambda kv: (kv[0][0], kv[0][1]))
        ],
        "campaigns": {
            "overall": rate(sum(caught.values()), len(caught)),
            "families": {f: rate(sum(caught[c] for c in cs), len(cs)) for f, cs in camp_fam.items()},
        },
    }


def _at_least(t: float) -> Callable[[AccountOutcome], bool]:
    return lambda o: o.score >= t  # False for every account when t is nan


def _cost(costs: Sequence[RunCost]) -> dict[str, Any] | None:
    if not costs:
        return None
    req = sum(c.requests for c in costs)
    cpu, wall = sum(c.seconds_cpu for c in costs), sum(c.seconds_wall for c in costs)
    return {
        "requests": req,
        "seconds_cpu": cpu,
        "seconds_wall": wall,
        "cpu_s_per_1m": cpu / req * 1e6 if req else NAN,
        "wall_s_per_1m": wall / req * 1e6 if req else NAN,
    }


def evaluate_detector(outcomes: Sequence[AccountOutcome], costs: Sequence[RunCost] = ()) -> dict[str, Any]:
    """All metrics for one detector's outcomes; ``warnings`` lists the limits found."""
    benign = [o for o in outcomes if o.label == "benign"]
    attack = [o for o in outcomes if o.label == "attack"]
    campaigns = _group((o for o in attack if o.campaign is not None), lambda o: o.campaign)
    bscores = [o.score for o in benign]
    name = outcomes[0].detector if outcomes else "?"
    warnings: list[str] = []
    ops: dict[str, Any] = {}
    for key, target in TARGET_FPRS.items():
        t = threshold_for_fpr(bscores, target)
        ok = not math.isnan(t)
        op = _op_point(benign, attack, campaigns, _at_least(t), ok)
        need = math.ceil(3 / target - 1e-9)
        op.update(
            kind="threshold",
            target_fpr=target,
            threshold=t if ok else None,
            min_benign_n=need,
            underpowered=len(benign) < need,
        )
        if op["underpowered"]:
            warnings.append(
                f"{name}: {len(benign)} benign accounts; FPR {target:.1%} needs >= {need} "
                f"with no false alarm, so TPR at {target:.1%} FPR is not meaningful"
            )
        ops[key] = op
    dep = _op_point(benign, attack, campaigns, lambda o: o.first_flag_ts is not None)
    dep.update(kind="deployed", target_fpr=None, threshold=None)
    ops[DEPLOYED] = dep

    fams = _group(attack, lambda o: o.family)
    delay = {
        kind: {
            "overall": delay_stats(attack, kind),
            "families": {f: delay_stats(g, kind) for f, g in fams.items()},
        }
        for kind in DELAY_KINDS
    }
    camp = {c: campaign_delay(ms) for c, ms in campaigns.items()}
    camp_fams: dict[str, Any] = {}
    for f, cs in _group(camp, lambda c: camp[c]["family"]).items():
        lm, lp = _quantiles([camp[c]["lower"] for c in cs])
        um, up = _quantiles([camp[c]["upper"] for c in cs])
        camp_fams[f] = {
            "caught": rate(sum(camp[c]["caught"] for c in cs), len(cs)),
            "lower_median": lm,
            "lower_p90": lp,
            "upper_median": um,
            "upper_p90": up,
        }
    roc = {
        f: {
            "n_attack": len(g),
            "auc": auc(bscores, [o.score for o in g]),
            **dict(zip(("fpr", "tpr"), roc_curve(bscores, [o.score for o in g]), strict=True)),
        }
        for f, g in fams.items()
    }

    missing = delay["attack_requests"]["overall"]["n_missing"]
    if missing:
        warnings.append(
            f"{name}: {missing} flagged attack accounts lack requests_before_flag; "
            "counted at their full n_requests"
        )
    if not benign:
        warnings.append(f"{name}: no benign accounts; thresholds and FPR are undefined")
    small = [f"{f} ({len(g)})" for f, g in fams.items() if len(g) < SMALL_GROUP]
    if small:
        warnings.append(
            f"{name}: families with < {SMALL_GROUP} attack accounts (wide intervals): " + ", ".join(small)
        )
    cost = _cost(costs)
    if cost is None:
        warnings.append(f"{name}: no run cost recorded")
    return {
        "benign_n": len(benign),
        "attack_n": len(attack),
        "campaign_n": len(campaigns),
        "operating_points": ops,
        "delay": delay,
        "campaigns": {"items": camp, "families": camp_fams},
        "roc": roc,
        "auc_overall": auc(bscores, [o.score for o in attack]),
        "cost": cost,
        "warnings": warnings,
    }


def evaluate(outcomes: Sequence[AccountOutcome], costs: Sequence[RunCost]) -> dict[str, Any]:
    """The harness's entry point: per-detector metrics plus run-wide warnings (see module doc)."""
    seen: set[tuple[str, str]] = set()
    for o in outcomes:
        if (o.detector, o.account) in seen:
            raise ValueError(f"duplicate outcome for detector {o.detector!r}, account {o.account!r}")
        seen.add((o.detector, o.account))
    by_det = _group(outcomes, lambda o: o.detector)
    cost_by = _group(costs, lambda c: c.detector)
    detectors = {d: evaluate_detector(os_, cost_by.get(d, [])) for d, os_ in by_det.items()}
    warnings = [w for r in detectors.values() for w in r["warnings"]]
    populations = {d: frozenset(o.account for o in os_) for d, os_ in by_det.items()}
    if len(set(populations.values())) > 1:
        warnings.append(
            "detectors were evaluated on different account sets; side-by-side numbers "
            "are not directly comparable"
        )
    for d in sorted(set(cost_by) - set(by_det)):
        warnings.append(f"run cost recorded for {d!r}, which has no outcomes")
    return {
        "schema": SCHEMA,
        "operating_points": {k: {"target_fpr": TARGET_FPRS.get(k)} for k in OP_POINTS},
        "detectors": detectors,
        "warnings": warnings,
    }
