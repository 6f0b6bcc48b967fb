"""Detection metrics and report: Wilson intervals, FPR thresholds, per-family TPR, AUC, delay, JSON/HTML."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.optimize import brentq

from antidistill.evaluation.metrics import (
    MAX_ROC_POINTS,
    AccountOutcome,
    RunCost,
    auc,
    campaign_delay,
    delay_stats,
    evaluate,
    roc_curve,
    threshold_for_fpr,
    wilson,
)
from antidistill.evaluation.report import write_report

Z = 1.959963984540054


def acct(
    account: str,
    label: str = "attack",
    family: str = "bulk",
    score: float = 0.0,
    *,
    detector: str = "ours",
    share: float | None = None,
    n: int = 100,
    ts: float | None = None,
    before: int | None = None,
    attack_before: int | None = None,
    campaign: str | None = None,
) -> AccountOutcome:
    return AccountOutcome(
        account=account,
        label=label,  # type: ignore[arg-type]
        family=family if label == "attack" else "benign",
        share=share,
        detector=detector,
        score=score,
        n_requests=n,
        first_flag_ts=ts,
        requests_before_flag=before,
        attack_requests_before_flag=attack_before,
        cluster=None,
        campaign=campaign,
    )


def benign_pop(n: int, detector: str = "ours", top: float = 0.5) -> list[AccountOutcome]:
    return [acct(f"b{i}", "benign", score=top * i / n, detector=detector) for i in range(n)]


# --- Wilson ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (1, 100, 0.0018, 0.0545)],
)
def test_wilson_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson(k, n)
    assert got[0] == pytest.approx(lo, abs=1e-4)
    assert got[1] == pytest.approx(hi, abs=1e-4)


@pytest.mark.parametrize(("k", "n"), [(1, 7), (3, 40), (97, 100), (12, 3000)])
def test_wilson_solves_score_equation(k: int, n: int) -> None:
    """The Wilson bounds are the roots of (phat - p)^2 = z^2 p (1 - p) / n, found here numerically."""
    phat = k / n

    def f(p: float) -> float:
        return (phat - p) ** 2 - Z * Z * p * (1 - p) / n

    lo, hi = wilson(k, n)
    assert lo == pytest.approx(brentq(f, 1e-12, phat), abs=1e-9)
    assert hi == pytest.approx(brentq(f, phat, 1 - 1e-12), abs=1e-9)


def test_wilson_empty_and_invalid() -> None:
    assert all(math.isnan(x) for x in wilson(0, 0))
    with pytest.raises(ValueError):
        wilson(11, 10)


# --- thresholds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "target"), [(1000, 0.01), (1000, 0.001), (3500, 0.001), (257, 0.01)])
def test_threshold_meets_target_and_is_tight(n: int, target: float) -> None:
    scores = np.random.default_rng(n).random(n)
    t = threshold_for_fpr(scores, target)
    fpr = float(np.mean(scores >= t))
    assert fpr <= target
    below = scores[scores < t].max()  # any threshold <= this flags one more benign account
    assert float(np.mean(scores >= below)) > target
    assert fpr == math.floor(target * n) / n  # uses exactly the allowed number of false alarms


def test_threshold_with_ties_at_top() -> None:
    scores = [0.9] * 20 + [0.1] * 980  # 1% allows 10 alarms, but the 20 tied ones cannot be split
    t = threshold_for_fpr(scores, 0.01)
    assert 0.9 < t < 0.90001
    assert sum(s >= t for s in scores) == 0
    assert math.isnan(threshold_for_fpr([], 0.01))


# --- per-family TPR, shares, operating points -------------------------------------------------------


def constructed() -> list[AccountOutcome]:
    out = benign_pop(1000)  # scores in [0, 0.5)
    out.append(acct("b-flag", "benign", score=0.3, ts=5.0, before=10))  # deployed false alarm
    out += [acct(f"bulk{i}", family="bulk", score=0.9, ts=1.0, before=20) for i in range(10)]
    out += [acct(f"sw{i}", family="sweep", score=0.9 if i < 4 else 0.1) for i in range(10)]
    for share, score in ((0.05, 0.2), (0.25, 0.95)):
        out += [
            acct(
                f"mx{share}-{i}",
                family="mixed_share",
                share=share,
                score=score,
                ts=None if share < 0.1 else 2.0,
            )
            for i in range(5)
        ]
    return out


def test_tpr_per_family_and_share() -> None:
    res = evaluate(constructed(), [RunCost("ours", 2_000_000, 3.0, 5.0)])
    d = res["detectors"]["ours"]
    assert d["benign_n"] == 1001 and d["attack_n"] == 30
    op = d["operating_points"]["fpr_1pct"]
    assert op["benign"]["k"] <= 10 and op["benign"]["rate"] <= 0.01
    fam = op["families"]
    assert (fam["bulk"]["k"], fam["bulk"]["n"]) == (10, 10)
    assert (fam["sweep"]["k"], fam["sweep"]["n"]) == (4, 10)
    assert (fam["mixed_share"]["k"], fam["mixed_share"]["n"]) == (5, 10)
    assert fam["sweep"]["lo"] == pytest.approx(wilson(4, 10)[0])
    assert op["overall"]["k"] == 19 and op["overall"]["n"] == 30
    shares = {s["share"]: (s["k"], s["n"]) for s in op["shares"]}
    assert shares == {0.05: (0, 5), 0.25: (5, 5)}
    assert op["underpowered"] is False
    assert d["operating_points"]["fpr_0.1pct"]["underpowered"] is True
    assert any("0.1%" in w and "not meaningful" in w for w in res["warnings"])
    dep = d["operating_points"]["deployed"]
    assert dep["benign_families"]["benign"]["k"] == 1
    assert dep["benign"]["k"] == 1 and dep["benign"]["per_10k"] == pytest.approx(1e4 / 1001)
    assert dep["families"]["bulk"]["k"] == 10 and dep["families"]["sweep"]["k"] == 0
    assert d["cost"]["cpu_s_per_1m"] == pytest.approx(1.5) and d["cost"]["wall_s_per_1m"] == pytest.approx(
        2.5
    )


def test_enough_benign_for_0_1pct_and_duplicate_rejected() -> None:
    res = evaluate([*benign_pop(3000), acct("a", score=0.9)], [])
    assert res["detectors"]["ours"]["operating_points"]["fpr_0.1pct"]["underpowered"] is False
    with pytest.raises(ValueError, match="duplicate"):
        evaluate([acct("a"), acct("a")], [])
    with pytest.raises(ValueError):
        acct("x", score=1.5)


# --- ROC / AUC ------------------------------------------------------------------------------------


def test_auc_separated_identical_and_roc_area() -> None:
    rng = np.random.default_rng(7)
    b, a = list(rng.random(500) * 0.5), list(0.5 + rng.random(300) * 0.5)
    assert auc(b, a) == 1.0 and auc(a, b) == 0.0
    same_b, same_a = list(rng.normal(size=2000)), list(rng.normal(size=2000))
    assert abs(auc(same_b, same_a) - 0.5) < 0.03
    assert auc([0.3] * 5, [0.3] * 7) == 0.5
    fpr, tpr = roc_curve(same_b[:150], same_a[:100])  # 251 points: not thinned
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(auc(same_b[:150], same_a[:100]), abs=1e-12)
    fpr, tpr = roc_curve(same_b, same_a)  # thinned, endpoints kept
    assert len(fpr) <= MAX_ROC_POINTS and (fpr[0], tpr[-1]) == (0.0, 1.0)


# --- delay / campaigns ----------------------------------------------------------------------------


def test_campaign_delay_bounds() -> None:
    members = [
        acct("h1", family="hydra", ts=10.0, before=60, attack_before=50, campaign="c1"),
        acct("h2", family="hydra", ts=20.0, before=80, attack_before=80, campaign="c1"),
        acct("h3", family="hydra", n=100, campaign="c1"),
    ]
    c = campaign_delay(members)
    assert c["caught"] and c["first_flag_ts"] == 10.0 and c["members_flagged"] == 2
    assert (c["lower"], c["upper"]) == (50.0, 230.0)
    tie = campaign_delay([*members[:1], acct("h4", family="hydra", ts=10.0, before=7, campaign="c1")])
    assert tie["lower"] == tie["upper"] == 57.0
    missed = campaign_delay([acct("m1", n=40, campaign="c2"), acct("m2", n=60, campaign="c2")])
    assert not missed["caught"] and missed["lower"] == missed["upper"] == 100.0


def test_delay_stats_and_campaign_aggregation() -> None:
    accts = [acct(f"a{i}", ts=1.0, before=v) for i, v in enumerate((10, 20, 30, 40))]
    accts += [acct("never", n=1000), acct("mixed", share=0.1, n=500)]
    st = delay_stats(accts)
    vals = [10, 20, 30, 40, 1000, 50]  # never-flagged: full traffic, attack share of it if mixed
    assert st["median"] == pytest.approx(np.median(vals)) and st["p90"] == pytest.approx(
        np.quantile(vals, 0.9)
    )
    assert (st["n_flagged"], st["n_never_flagged"], st["never_flagged_requests"]) == (4, 2, 1050.0)
    assert st["median_flagged"] == 25.0
    assert delay_stats(accts, "requests")["never_flagged_requests"] == 1500.0

    camp = [
        acct("c1a", family="hydra", ts=1.0, before=10, campaign="c1"),
        acct("c1b", family="hydra", ts=2.0, before=30, campaign="c1"),
        acct("c2a", family="hydra", ts=5.0, before=100, campaign="c2"),
        acct("c3a", family="hydra", n=500, campaign="c3"),
    ]
    res = evaluate(benign_pop(100) + camp, [])["detectors"]["ours"]
    fam = res["campaigns"]["families"]["hydra"]
    assert (fam["caught"]["k"], fam["caught"]["n"]) == (2, 3)
    assert (
        fam["upper_median"] == 100.0 and fam["lower_median"] == 100.0
    )  # uppers 40,100,500; lowers 10,100,500
    assert res["operating_points"]["deployed"]["campaigns"]["families"]["hydra"]["k"] == 2


# --- report ---------------------------------------------------------------------------------------


def _no_nan(obj: Any) -> None:
    def bad(c: str) -> None:
        raise AssertionError(f"non-finite constant {c} in JSON")

    json.loads(obj, parse_constant=bad)


def test_report_json_and_html(tmp_path: Path) -> None:
    evil = "<script>alert('x')</script>"
    outcomes = [
        *constructed(),
        acct("e1", family="a&b", score=0.99, detector=evil, ts=1.0, before=3),
        acct("e2", "benign", score=0.1, detector=evil),
        acct("lonely", family="bulk", score=0.5, detector="no-benign"),  # NaN thresholds / FPR
    ]
    res = evaluate(outcomes, [RunCost("ours", 1000, 0.1, 0.2)])
    jpath, hpath = write_report(res, tmp_path / "out")
    text = jpath.read_text()
    assert "NaN" not in text and "Infinity" not in text
    _no_nan(text)
    loaded = json.loads(text)
    assert loaded["detectors"]["no-benign"]["operating_points"]["fpr_1pct"]["threshold"] is None
    assert loaded["detectors"]["no-benign"]["operating_points"]["fpr_1pct"]["benign"]["rate"] is None

    page = hpath.read_text()
    assert evil not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "a&amp;b" in page and "a&b" not in page
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 2
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "too few benign" in page and "Limits" in page
