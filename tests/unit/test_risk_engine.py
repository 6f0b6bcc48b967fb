"""The risk engine's pieces: features, calibration, the account graph, and scoring end to end on
generated traffic (benign calibration; a fresh benign trace for false positives; blatant attackers)."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from antidistill.evaluation import replay as rp
from antidistill.evaluation.detection import benign_only
from antidistill.evaluation.traffic import generate_trace, preset
from antidistill.risk.calibration import CHECKPOINTS, Calibration, bucket_of, role_of
from antidistill.risk.clusters import ClusterIndex, network_of
from antidistill.risk.engine import RiskEngine
from antidistill.risk.features import ActivityState
from antidistill.risk.signals import extract_signals
from antidistill.risk.types import Message, RiskEvent


def ev(ts: float, account: str, text: str = "hello there, how are you today?", **kw: object) -> RiskEvent:
    return RiskEvent(ts=ts, account=account, messages=(Message("user", text),), **kw)  # type: ignore[arg-type]


# -- features ---------------------------------------------------------------------------------------
def test_rolling_peaks_busy_days_and_regularity() -> None:
    s = ActivityState()
    t0 = 1_767_225_600.0  # midnight UTC
    for i in range(30):  # 30 requests one minute apart: one busy day, peak hour 30
        e = ev(t0 + 60 * i, "a")
        s.add(e, extract_signals(e))
    f = s.snapshot()
    assert math.expm1(f["peak_hour"]) == pytest.approx(30)
    assert s.busy_days == 1
    assert f["regularity"] == pytest.approx(1.0)  # identical gaps: std of log gaps is 0
    e = ev(t0 + 86400 * 3, "a")
    s.add(e, extract_signals(e))
    assert math.expm1(s.snapshot()["peak_hour"]) == pytest.approx(30)
    assert s.snapshot()["regularity"] < 0.5  # one long gap breaks the regularity


def test_template_share_counts_repeated_skeletons() -> None:
    s = ActivityState()
    for i in range(20):
        e = ev(
            1e9 + i, "a", f"Translate the following sentence into French: 'The {i}th cat sat on mat {i * 7}.'"
        )
        s.add(e, extract_signals(e))
    assert s.snapshot()["template_share"] > 0.9


# -- calibration -------------------------------------------------------------------------------------
def test_checkpoints_and_buckets() -> None:
    assert CHECKPOINTS[:6] == (4, 6, 8, 12, 16, 24)
    assert bucket_of(3) == -1 and bucket_of(4) == 0 and bucket_of(7) == 1 and bucket_of(8) == 2


def test_roles_are_deterministic_and_balanced() -> None:
    roles = [role_of(f"acct-{i}") for i in range(8000)]
    assert roles == [role_of(f"acct-{i}") for i in range(8000)]
    share = {r: roles.count(r) / len(roles) for r in ("reference", "tails", "level")}
    # expected 1/8, 3/8, 1/2; 5-sigma binomial bounds for n = 8000
    for r, p in (("reference", 1 / 8), ("tails", 3 / 8), ("level", 1 / 2)):
        assert abs(share[r] - p) < 5 * math.sqrt(p * (1 - p) / 8000)


# -- account graph -----------------------------------------------------------------------------------
def test_network_of() -> None:
    assert network_of("10.1.2.3") == "10.1.2.0/24"
    assert network_of("2001:db8::1") == "2001:db8::/48"
    assert network_of("not an ip") is None
    assert network_of("300.1.2.3") is None


def _observe(index: ClusterIndex, states: dict[str, ActivityState], e: RiskEvent) -> None:
    sig = extract_signals(e)
    states.setdefault(e.account, ActivityState()).add(e, sig)
    index.observe(e, sig, states)


def test_one_kind_of_evidence_links_nothing_two_kinds_link() -> None:
    index, states = ClusterIndex(), {}
    # same /24 only (a company NAT): no cluster
    natural = [
        "How do I keep my roses from getting black spots in a humid summer?",
        "What's a good name for a grey kitten who likes to sleep in boxes?",
        "Can you explain the difference between a Roth IRA and a traditional one?",
        "My sourdough starter smells like nail polish remover, is that normal?",
        "Which is warmer for winter hiking, merino wool or synthetic layers?",
    ]
    for i, text in enumerate(natural):
        _observe(index, states, ev(1e9 + i * 3600, f"nat-{i}", text, ip=f"10.0.0.{i}"))
    assert index.clusters() == []
    # same /24 and the same long template: one cluster of all of them
    tpl = "Solve the following problem step by step and show all intermediate reasoning: {}"
    for i in range(5):
        _observe(
            index,
            states,
            ev(2e9 + i * 3600, f"hyd-{i}", tpl.format(f"x^{i} + {i * 3} = 0"), ip=f"10.9.9.{i}"),
        )
    clusters = index.clusters()
    assert len(clusters) == 1 and clusters[0].members == {f"hyd-{i}" for i in range(5)}
    assert clusters[0].state.n == 5  # pooled state counts every member's request once


def test_payment_fingerprint_alone_links() -> None:
    index, states = ClusterIndex(), {}
    _observe(index, states, ev(1e9, "p1", payment_fingerprint="card-123"))
    _observe(index, states, ev(1e9 + 99999, "p2", payment_fingerprint="card-123"))
    assert index.cluster_of("p1") is index.cluster_of("p2") is not None


# -- end to end ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibration() -> Calibration:
    events = benign_only(generate_trace(replace(preset("small", 11), split="calib", n_benign_accounts=1200)))
    return rp.calibrate(events, rp.make_embedder("hashing"), 0.01, progress=False)


def test_calibration_round_trip(calibration: Calibration, tmp_path: Path) -> None:
    p = tmp_path / "cal.npz"
    calibration.save(p)
    back = Calibration.load(p)
    assert back.threshold == calibration.threshold
    feats = {"peak_hour": 3.0, "elicitation": 0.5}
    assert back.look_statistic(40, feats)[0] == calibration.look_statistic(40, feats)[0]


def test_benign_false_positive_rate_on_fresh_traffic(calibration: Calibration) -> None:
    """Fresh benign accounts (other seed, other corpus half): the flagged share must be consistent
    with the calibrated 1% (the level set has ~600 accounts, so the threshold's own sampling error is
    large: we bound the realized count by the binomial 1e-4 tail at twice the target)."""
    fresh = benign_only(generate_trace(replace(preset("small", 12), split="test", n_benign_accounts=1200)))
    engine = RiskEngine(calibration, rp.make_embedder("hashing"))
    rp.run(engine, fresh, progress=False)
    n = len(engine.accounts)
    flagged = sum(1 for r in engine.accounts.values() if r.first_flag_ts is not None)
    bound = int(stats.binom.isf(1e-4, n, 0.02))
    assert flagged <= bound, f"{flagged} of {n} benign accounts flagged (bound {bound})"


def test_blatant_harvester_is_flagged_with_reasons(calibration: Calibration) -> None:
    t0 = 1_767_571_200.0
    cue = "Think step by step and show your complete chain of thought before the final answer."
    topics = ["prime numbers", "photosynthesis", "binary search", "the French revolution", "tax law"]
    harvest = [
        RiskEvent(
            ts=t0 + 45.0 * i,
            account="harvester",
            ip="203.0.113.7",
            user_agent="python-requests/2.31",
            messages=(Message("user", f"Explain {topics[i % 5]} in depth, case {i}. {cue}"),),
            prompt_tokens=30,
            completion_tokens=900,
        )
        for i in range(3000)
    ]
    engine = RiskEngine(calibration, rp.make_embedder("hashing"))
    findings = engine.process(harvest)
    rec = engine.accounts["harvester"]
    assert rec.first_flag_ts is not None
    assert rec.requests_before_flag is not None and rec.requests_before_flag <= 200
    assert any("step-by-step reasoning" in r for r in rec.reasons)
    assert findings and findings[-1].flagged and 0.0 <= findings[-1].score <= 1.0
    summary = engine.account_summary("harvester")
    assert summary["flagged"] is True and summary["reasons"]


def test_scores_are_monotone_in_the_statistic(calibration: Calibration) -> None:
    xs = np.linspace(0, 100, 50)
    scores = [calibration.score(x) for x in xs]
    assert all(a <= b for a, b in itertools.pairwise(scores))
    assert scores[0] >= 0.0 and scores[-1] <= 1.0


def test_embedding_cache_eviction_keeps_the_batch(
    calibration: Calibration, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that repeats cached texts and brings more new ones than the cache holds must still be
    served (the eviction happens after the batch, not while it is being answered)."""
    import antidistill.risk.engine as eng

    monkeypatch.setattr(eng, "EMBED_CACHE", 5)
    engine = RiskEngine(calibration, rp.make_embedder("hashing"))
    first = [ev(1e9 + i, f"u{i}", f"first prompt number {i} about a topic") for i in range(3)]
    engine.process(first)
    batch = [ev(2e9 + i, f"v{i}", f"another distinct prompt {i} on a subject") for i in range(12)]
    batch += [ev(3e9, "u0", "first prompt number 0 about a topic")]
    engine.process(batch)
    assert len(engine._embed_cache) <= 5


def test_shipped_calibration_matches_the_current_features() -> None:
    """The calibration shipped in the package must load (it is refused when the features changed:
    re-fit it with `antidistill risk calibrate --embedder minilm --out
    src/antidistill/risk/data/default-minilm.npz`), and moving the target FPR moves only the threshold."""
    from antidistill.evaluation.detection import SHIPPED_CALIBRATIONS, default_calibration

    path = SHIPPED_CALIBRATIONS["minilm"]
    cal = Calibration.load(path)
    assert cal.embedder == "minilm" and cal.reference_embeddings is not None
    assert cal.meta.get("benign_accounts", 0) >= 1000
    loose, strict = cal.with_target(0.01), cal.with_target(0.001)
    assert loose.threshold <= strict.threshold
    assert (
        loose.look_statistic(64, {"elicitation": 0.5})[0]
        == strict.look_statistic(64, {"elicitation": 0.5})[0]
    )
    assert default_calibration("minilm", 0.01, progress=False).threshold == loose.threshold
